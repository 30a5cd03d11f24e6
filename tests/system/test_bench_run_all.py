"""bench/run_all.py: the targets table is computed from the saved results, and the doc's
hand-written text outside the markers survives a render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import run_all

MACHINE = {"date": "2026-11-29 06:00 UTC", "load_average": [0.5, 0.4, 0.3]}


def save(folder: Path, name: str, results: Any) -> None:
    report = {"bench": name, "machine": MACHINE, "results": results, "command": "x", "seconds": 1}
    (folder / f"{name}.json").write_text(json.dumps(report))


def sse_row(stack: str, subscribers: int, p99: float) -> dict[str, Any]:
    return {
        "stack": stack, "subscribers": subscribers, "deliveries": subscribers * 50,
        "complete_streams": subscribers, "median_ms": 50.0, "p95_ms": 90.0, "p99_ms": p99,
        "max_ms": p99 + 10, "connect_s": 9.0, "web_cpu_us_per_delivery": 110,
        "web_rss_mib": 200, "kib_per_stream": 61.5, "load_before": 0.5, "load_after": 0.6,
    }  # fmt: skip


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    monkeypatch.setattr(run_all, "RESULTS", folder)
    monkeypatch.setattr(run_all, "DOC", tmp_path / "PERFORMANCE.md")
    return folder


def test_targets_compare_every_stack_with_its_bound(results: Path) -> None:
    stat = {"median": 3.0, "p95": 9.0, "p99": 12.0}
    sandbox = {
        stack: {
            "calls": {"tiny": {"direct_ms": stat, "api_ms": stat, "in_process_ms": stat,
                               "overhead_ms": overhead}},
            "ready": {"tiny": {"direct_start_ms": stat, "create_to_ready_ms": stat,
                               "service_ms": {**stat, "median": 70.0}}},
            "capacity": [{"sessions": 200, "ramp_s": 30.0, "call_ms": stat, "failed_calls": 0,
                          "host_pss_mib": 90.0, "sandboxes_pss_mib": 2000.0,
                          "per_sandbox_pss_mib": 10.0, "load": [1.0, 1.0, 1.0]}],
        }
        for stack, overhead in (("sqlite", 3.5), ("postgres", 5.2))
    }  # fmt: skip
    save(results, "sandbox", sandbox)
    save(results, "sse_1000", [sse_row("sqlite", 1000, 140.0), sse_row("postgres", 1000, 149.9)])
    rows = "\n".join(run_all.targets())
    overhead_row = next(line for line in rows.splitlines() if "Tool-call overhead" in line)
    assert "sqlite tiny: 3.5" in overhead_row
    assert "postgres tiny: 5.2" in overhead_row
    assert overhead_row.endswith("| **missed** |")  # one stack over the bound misses it
    assert next(line for line in rows.splitlines() if "Sandbox ready" in line).endswith("| met |")
    assert next(line for line in rows.splitlines() if "200 concurrent" in line).endswith("| met |")
    assert next(line for line in rows.splitlines() if "1,000 SSE" in line).endswith("| met |")
    stream_row = next(line for line in rows.splitlines() if "per SSE stream" in line)
    assert "SQLite + embedded bus, 1,000: 61.5" in stream_row
    assert stream_row.endswith("| no target |")  # measured and shown, not judged
    enqueue_row = next(line for line in rows.splitlines() if "enqueue" in line)
    assert enqueue_row.endswith("| — | not measured |")


def test_failed_calls_fail_the_capacity_target(results: Path) -> None:
    stat = {"median": 3.0, "p95": 9.0, "p99": 12.0}
    capacity = [
        {"sessions": 250, "ramp_s": 30.0, "call_ms": stat, "failed_calls": 3,
         "host_pss_mib": 90.0, "sandboxes_pss_mib": 2000.0, "load": [1.0, 1.0, 1.0]}
    ]  # fmt: skip
    save(results, "sandbox", {"sqlite": {"capacity": capacity}})
    row = next(line for line in run_all.targets() if "200 concurrent" in line)
    assert row.endswith("| **missed** |"), row


def test_render_keeps_the_text_around_the_markers(results: Path) -> None:
    run_all.DOC.write_text(
        f"# Performance\n\nWritten by hand.\n\n{run_all.BEGIN}\nold numbers\n{run_all.END}\n\n"
        "## Misses\n\nAlso by hand.\n"
    )
    save(results, "sse_3000", [sse_row("sqlite", 3000, 420.0)])
    run_all.render()
    text = run_all.DOC.read_text()
    assert text.startswith("# Performance\n\nWritten by hand.\n\n")
    assert text.endswith("\n\n## Misses\n\nAlso by hand.\n")
    assert "old numbers" not in text
    assert "### SSE fan-out, 3,000 subscribers" in text
    assert "| SQLite + embedded bus | 150,000 | 3,000 |" in text
    assert text.count(run_all.BEGIN) == text.count(run_all.END) == 1
