"""Every benchmark, one after another, on both stacks; results into docs/PERFORMANCE.md.

    .venv/bin/python bench/run_all.py                 # everything, ~40 min on 2 cores
    .venv/bin/python bench/run_all.py --only sse_1000 --only sse_3000
    .venv/bin/python bench/run_all.py --render        # rewrite the doc from saved results
    .venv/bin/python bench/run_all.py --quick         # small sizes: checks the benches run

Each step is one of the bench scripts run as a child with ``--json``, bounded by its own
timeout; its output goes to ``bench/results/<step>.log`` and its results to
``bench/results/<step>.json`` (both kept in git, so the doc's numbers can be traced). A
step that fails leaves the previous results of that step in place and is named at the
end (exit status 1). Before each step it waits (at most ``--quiet-wait`` seconds) for a
1-minute load average under ``--quiet-load``: the numbers move with whatever else the
machine's cores are doing, and the doc records the load of each step.

The doc's hand-written text stays; only what lies between the ``bench:results``
markers is replaced: the product targets against the measured values, then each
benchmark's table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
STACK_NAMES = {"sqlite": "SQLite + embedded bus", "postgres": "PostgreSQL + Redis"}


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    args: tuple[str, ...]
    quick: tuple[str, ...]
    timeout: int  # seconds


STEPS = [
    Step("mcp_client", "mcp_call_overhead.py", ("--calls", "500"), ("--calls", "50"), 600),
    Step(
        "sandbox",
        "sandbox.py",
        ("--stack", "both", "--rounds", "20", "--calls", "500", "--levels", "50,100,200"),
        ("--stack", "both", "--rounds", "3", "--calls", "50", "--levels", "5", "--probe", "10"),
        2400,
    ),
    Step(
        "enqueue",
        "enqueue_latency.py",
        ("--only", "sqlite-redis", "--only", "postgres-redis", "--jobs", "200"),
        ("--only", "sqlite-redis", "--only", "postgres-redis", "--jobs", "10"),
        1200,
    ),
    Step(
        "api",
        "api_throughput.py",
        ("--stack", "both", "--seconds", "5", "--levels", "1,8,32"),
        ("--stack", "both", "--seconds", "0.5", "--levels", "1,2"),
        1200,
    ),
    Step("sse_1000", "sse_fanout.py", ("--subscribers", "1000"), ("--subscribers", "50"), 1200),
    Step(
        "sse_3000",
        "sse_fanout.py",
        ("--subscribers", "3000"),
        ("--subscribers", "100", "--events", "5"),
        1800,
    ),
    Step(
        "first_launch",
        "first_launch.py",
        ("--stack", "both", "--cold", "3", "--warm", "3", "--cached", "5"),
        ("--cold", "1", "--warm", "1", "--cached", "1"),
        1800,
    ),
    Step(
        "hf_download",
        "hf_download.py",
        ("--rounds", "3"),
        ("--size-mb", "16", "--rounds", "1"),
        1200,
    ),
]


def wait_quiet(load: float, bound: float) -> float:
    """Wait until the 1-minute load average is under ``load`` (at most ``bound`` s)."""
    deadline = time.monotonic() + bound
    while os.getloadavg()[0] >= load and time.monotonic() < deadline:
        time.sleep(5)
    return round(os.getloadavg()[0], 2)


def run_step(step: Step, quick: bool, load_at_start: float) -> tuple[bool, float]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{step.name}.json"
    fresh = RESULTS / f"{step.name}.json.new"
    fresh.unlink(missing_ok=True)
    argv = [
        sys.executable,
        str(REPO / "bench" / step.script),
        *(step.quick if quick else step.args),
    ]
    started = time.monotonic()
    with (RESULTS / f"{step.name}.log").open("w") as log:
        log.write(f"$ {' '.join(argv[1:])} --json {fresh.relative_to(REPO)}\n")
        log.flush()
        try:
            proc = subprocess.run(
                [*argv, "--json", str(fresh)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=step.timeout,
                check=False,
            )
            ok = proc.returncode == 0 and fresh.exists()
        except subprocess.TimeoutExpired:  # run() killed it; its own cleanup did not run
            log.write(f"\nrun_all: timed out after {step.timeout} s\n")
            ok = False
    elapsed = time.monotonic() - started
    if ok:
        report = json.loads(fresh.read_text())
        report["command"] = f"python bench/{step.script} {' '.join(argv[2:])}".strip()
        report["load_at_start"] = load_at_start
        report["commit"] = head_commit()
        report["seconds"] = round(elapsed)
        out.write_text(json.dumps(report, indent=1) + "\n")
    fresh.unlink(missing_ok=True)
    return ok, elapsed


# --- rendering ---------------------------------------------------------------------------------
def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def head_commit() -> str:
    git = ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()


def when(report: dict[str, Any]) -> str:
    m = report["machine"]
    start = report.get("load_at_start", "?")
    return (
        f"{m['date']}, commit `{report.get('commit', '?')}`, load {start} → "
        f"{m['load_average'][0]}, {report.get('seconds', '?')} s"
    )


def verdict(ok: bool | None, bound: bool = True) -> str:
    if not bound:
        return "no target"
    return {True: "met", False: "**missed**", None: "not measured"}[ok]


def targets() -> list[str]:
    rows: list[tuple[str, str, str]] = []

    def add(
        target: str,
        values: list[tuple[str, float | None]],
        check: Callable[[float], bool] | None,
    ) -> None:
        shown = [f"{label}: {value:g}" for label, value in values if value is not None]
        measured = [value for _, value in values if value is not None]
        ok = all(check(v) for v in measured) if measured and check else None
        rows.append((target, "; ".join(shown) or "—", verdict(ok, check is not None)))

    sandbox = (load("sandbox") or {}).get("results", {})
    overhead, ready = [], []
    for stack, report in sandbox.items():
        for server, calls in report.get("calls", {}).items():
            overhead.append((f"{stack} {server}", calls["overhead_ms"]))
        for server, start in report.get("ready", {}).items():
            ready.append((f"{stack} {server}", start["service_ms"]["median"]))
    add("Tool-call overhead over direct stdio < 5 ms median (ms)", overhead, lambda v: v < 5)
    add(
        "Sandbox ready < 150 ms median added to the server's start-up (ms)",
        ready,
        lambda v: v < 150,
    )
    live = []
    for stack, report in sandbox.items():
        if report.get("capacity"):
            top = report["capacity"][-1]
            live.append(
                (
                    f"{stack} live, {top['failed_calls']} calls failed",
                    top["sessions"] if not top["failed_calls"] else 0,
                )
            )
    add(
        "≥ 200 concurrent live sandboxes on one 2-core host, calls answered",
        live,
        lambda v: v >= 200,
    )
    sse = [
        (f"{STACK_NAMES[r['stack']]}", r["p99_ms"])
        for r in (load("sse_1000") or {}).get("results", [])
    ]
    add("1,000 SSE subscribers, p99 delivery < 150 ms (ms)", sse, lambda v: v < 150)
    sse3 = [
        (f"{STACK_NAMES[r['stack']]}", r["p99_ms"])
        for r in (load("sse_3000") or {}).get("results", [])
    ]
    add("3,000 SSE subscribers, p99 delivery (ms)", sse3, None)
    idle = [
        (f"{stack} {server}", m["per_sandbox_pss_mib"])
        for stack, report in sandbox.items()
        for server, m in report.get("memory", {}).items()
    ]
    add("Memory per idle sandbox (MiB PSS)", idle, None)
    per_stream = [
        (f"{STACK_NAMES[r['stack']]}, {r['subscribers']:,}", r["kib_per_stream"])
        for name in ("sse_1000", "sse_3000")
        for r in (load(name) or {}).get("results", [])
        if "kib_per_stream" in r
    ]
    add("Memory per SSE stream (KiB PSS of the web process)", per_stream, None)
    enqueue = [
        (r["config"], r["row_ms"]["median"]) for r in (load("enqueue") or {}).get("results", [])
    ]
    add("Job enqueue → running < 50 ms median (ms)", enqueue, lambda v: v < 50)
    first = (load("first_launch") or {}).get("results", {}).get("stacks", {})
    add(
        "First launch of server-everything (npx) from an empty sandbox cache → ready, "
        "npm's download cache cold / warm (s, median)",
        [
            (f"{stack} {mode}", modes[mode]["post_to_ready_s"]["median"])
            for stack, modes in first.items()
            for mode in ("cold", "warm")
            if mode in modes
        ],
        None,
    )
    add(
        "The launch after it, from the sandbox cache → ready (s, median)",
        [
            (stack, modes["cached"]["post_to_ready_s"]["median"])
            for stack, modes in first.items()
            if "cached" in modes
        ],
        None,
    )
    hf = (load("hf_download") or {}).get("results")
    add(
        "model.pull within 10 % of snapshot_download (ratio)",
        [("model.pull / snapshot_download", hf["ratio"])] if hf else [],
        lambda v: v >= 0.9,
    )
    lines = ["| target (the product brief and the issues) | measured | verdict |", "|---|---|---|"]
    lines += [f"| {target} | {values} | {outcome} |" for target, values, outcome in rows]
    return lines


def heading(title: str, report: dict[str, Any]) -> list[str]:
    """A section's title with the run's date, load and duration, then its command."""
    return [f"### {title} ({when(report)})", "", f"`{report['command']}`", ""]


def section_mcp() -> list[str]:
    report = load("mcp_client")
    if not report:
        return []
    lines = heading("MCP client", report)
    lines += ["| server | path | median ms | p95 ms | over direct |", "|---|---|---|---|---|"]
    for server, paths in report["results"]["calls"].items():
        for kind, r in paths.items():
            over = "" if kind == "direct" else f"{r['over_direct_us']:+g} µs"
            lines.append(f"| {server} | {kind} | {r['median_ms']} | {r['p95_ms']} | {over} |")
    imports = ", ".join(f"`import {k}` {v} s" for k, v in report["results"]["import_s"].items())
    return [*lines, "", f"Import time: {imports}.", ""]


def section_sandbox() -> list[str]:
    report = load("sandbox")
    if not report:
        return []
    lines = heading("Sandboxes", report)
    lines += [
        "Start (ms, median; p95 in brackets): the server started directly, POST → `ready` on the "
        "stream, and the service's part (the job row's created → ready minus the sandboxed "
        "server's own start-up, per session).",
        "",
        "| stack | server | direct start-up | POST → ready | service part |",
        "|---|---|---|---|---|",
    ]
    for stack, r in report["results"].items():
        for server, s in r.get("ready", {}).items():
            lines.append(
                f"| {STACK_NAMES[stack]} | {server} | {s['direct_start_ms']['median']} | "
                f"{s['create_to_ready_ms']['median']} ({s['create_to_ready_ms']['p95']}) | "
                f"**{s['service_ms']['median']}** ({s['service_ms']['p95']}) |"
            )
    lines += [
        "",
        "Tool calls (`echo`, ms): through the API on one keep-alive connection against the "
        "same calls on a directly started server, in alternating blocks.",
        "",
        "| stack | server | direct stdio | through the API (p95) | in-process (no socket) "
        "| overhead |",
        "|---|---|---|---|---|---|",
    ]
    for stack, r in report["results"].items():
        for server, c in r.get("calls", {}).items():
            lines.append(
                f"| {STACK_NAMES[stack]} | {server} | {c['direct_ms']['median']} | "
                f"{c['api_ms']['median']} ({c['api_ms']['p95']}) | "
                f"{c['in_process_ms']['median']} | "
                f"**{c['overhead_ms']:+g}** |"
            )
    memory = [(stack, r["memory"]) for stack, r in report["results"].items() if "memory" in r]
    if memory:
        lines += [
            "",
            "Memory per idle sandbox (PSS of bubblewrap and the server, idle sessions of one "
            "server at once, MiB):",
            "",
            "| stack | server | sessions | processes | per idle sandbox MiB |",
            "|---|---|---|---|---|",
        ]
        for stack, servers in memory:
            for server, m in servers.items():
                lines.append(
                    f"| {STACK_NAMES[stack]} | {server} | {m['sessions']} | {m['processes']} | "
                    f"**{m['per_sandbox_pss_mib']}** |"
                )
    lines += [
        "",
        "Live sandboxes on one host (the tiny fixture server; probe calls one at a time to random "
        "sessions; memory is PSS):",
        "",
        "| stack | live | ramp s | call median / p95 ms | failed | host MiB | sandboxes MiB "
        "| per idle sandbox MiB | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stack, r in report["results"].items():
        for c in r.get("capacity", []):
            lines.append(
                f"| {STACK_NAMES[stack]} | {c['sessions']} | {c['ramp_s']} | "
                f"{c['call_ms']['median']} / {c['call_ms']['p95']} | {c['failed_calls']} | "
                f"{c['host_pss_mib']} | {c['sandboxes_pss_mib']} | "
                f"**{c.get('per_sandbox_pss_mib', '—')}** | "
                f"{round(c['load'][0], 1)} |"
            )
    return [*lines, ""]


def section_enqueue() -> list[str]:
    report = load("enqueue")
    if not report:
        return []
    lines = heading("Enqueue → running", report)
    lines += [
        "| configuration | created → started median / p95 ms | POST → seen running median / p95 ms "
        "| burst wait median / p95 ms | burst jobs/s | idle worker CPU % |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['config']} | **{r['row_ms']['median']}** / {r['row_ms']['p95']} | "
            f"{r['wall_ms']['median']} / {r['wall_ms']['p95']} | {r['burst_row_ms']['median']} / "
            f"{r['burst_row_ms']['p95']} | {r['burst_jobs_per_second']} | {r['idle_cpu_percent']} |"
        )
    return [*lines, ""]


def section_api() -> list[str]:
    report = load("api")
    if not report:
        return []
    lines = heading("API throughput", report)
    lines += [
        "| stack | request | clients | req/s | median ms | p95 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stack_report in report["results"]:
        for name, rows in stack_report["results"].items():
            for row in rows:
                lines.append(
                    f"| {STACK_NAMES[stack_report['stack']]} | {name} | {row['clients']} | "
                    f"**{row['rps']}** | {row['median']} | {row['p95']} | {row['p99']} | "
                    f"{row['failed']} |"
                )
    return [*lines, ""]


def section_sse(name: str) -> list[str]:
    report = load(name)
    if not report:
        return []
    count = report["results"][0]["subscribers"] if report["results"] else 0
    lines = heading(f"SSE fan-out, {count:,} subscribers", report)
    lines += [
        "| stack | deliveries | complete streams | median ms | p95 ms | p99 ms | max ms "
        "| connect s | web CPU µs / delivery | web RSS MiB | KiB per stream "
        "| full GCs in the web process while events flowed: count, longest ms "
        "| load before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {STACK_NAMES[r['stack']]} | {r['deliveries']:,} | {r['complete_streams']:,} | "
            f"{r['median_ms']} | {r['p95_ms']} | **{r['p99_ms']}** | {r['max_ms']} | "
            f"{r['connect_s']} | {r['web_cpu_us_per_delivery']} | {r['web_rss_mib']} | "
            f"**{r.get('kib_per_stream', '—')}** | "
            f"{r.get('web_full_gcs', '—')}, {r.get('web_full_gc_max_ms', '—')} | "
            f"{r['load_before']} → {r['load_after']} |"
        )
    return [*lines, ""]


def section_hf() -> list[str]:
    report = load("hf_download")
    if not report:
        return []
    r = report["results"]
    lines = heading("Model download", report)
    lines += [
        f"{r['size_mb']} MB in {r['shards']} shards, {r['rounds']} rounds, "
        "from a loopback fake hub.",
        "",
    ]
    lines += ["| downloader | median MB/s | each run |", "|---|---|---|"]
    for name, runs in r["mb_per_s"].items():
        lines.append(f"| {name} | {r['median_mb_per_s'][name]} | {', '.join(map(str, runs))} |")
    return [*lines, "", f"model.pull / snapshot_download = **{r['ratio']}**", ""]


FIRST_LAUNCH_MODES = {
    "cold": "first, npm download cache empty",
    "warm": "first, npm download cache warm",
    "cached": "from the sandbox cache (no install)",
}


def section_first_launch() -> list[str]:
    report = load("first_launch")
    if not report:
        return []
    r = report["results"]
    lines = heading("First launch of a catalog server", report)
    lines += [
        f"`{r['command']}` through `manage.py serve` on an empty data dir: POST → `ready` "
        f"on the session's stream (s). The package from {r['registry'].split('/')[2]} "
        f"(npm {r['npm']}, node {r['node']}) through the session's install step; each first "
        "launch from an empty sandbox cache.",
        "",
        "| stack | launch | runs | POST → ready median (min to max) | install step median "
        "| server start → ready median | each run | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stack, modes in r["stacks"].items():
        for mode, m in modes.items():
            ready, install, start = m["post_to_ready_s"], m["install_s"], m["start_to_ready_s"]
            runs = m["runs"]
            loads = [run["load"] for run in runs]
            lines.append(
                f"| {STACK_NAMES[stack]} | {FIRST_LAUNCH_MODES[mode]} | {len(runs)} | "
                f"**{ready['median']}** ({ready['min']} to {ready['max']}) | "
                f"{install.get('median', '—')} | {start.get('median', '—')} | "
                f"{', '.join(str(run['post_to_ready_s']) for run in runs)} | "
                f"{min(loads)} to {max(loads)} |"
            )
    return [*lines, ""]


def machine_line() -> str:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = ""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return (
        f"{os.cpu_count()} vCPUs ({cpu}), {memory} memory, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def render() -> None:
    block = [
        BEGIN,
        "<!-- written by bench/run_all.py; edit the text outside these markers -->",
        "",
        f"Machine: {machine_line()}. Each table gives its own date (UTC), the commit "
        "measured, the 1-minute load average at its start and end, and how long it ran. "
        "Command: `.venv/bin/python bench/run_all.py` (each step's own command is under "
        "its table; raw output in `bench/results/`).",
        "",
        "### Targets",
        "",
        *targets(),
        "",
        *section_mcp(),
        *section_sandbox(),
        *section_enqueue(),
        *section_api(),
        *section_sse("sse_1000"),
        *section_sse("sse_3000"),
        *section_first_launch(),
        *section_hf(),
        END,
    ]
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + "\n".join(block) + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=[s.name for s in STEPS])
    parser.add_argument("--quick", action="store_true", help="small sizes (results not rendered)")
    parser.add_argument("--render", action="store_true", help="only rewrite the doc")
    parser.add_argument("--quiet-load", type=float, default=1.0)
    parser.add_argument("--quiet-wait", type=float, default=300)
    args = parser.parse_args()
    failed = []
    if not args.render:
        global RESULTS
        if args.quick:  # never overwrite the measured results with smoke-test sizes
            RESULTS = RESULTS / "quick"
        for step in [s for s in STEPS if not args.only or s.name in args.only]:
            load_avg = wait_quiet(args.quiet_load, 0 if args.quick else args.quiet_wait)
            print(f"run_all: {step.name} (load {load_avg}) ...", flush=True)
            ok, elapsed = run_step(step, args.quick, load_avg)
            print(f"run_all: {step.name} {'ok' if ok else 'FAILED'} in {elapsed:.0f} s", flush=True)
            if not ok:
                failed.append(step.name)
    if not args.quick:
        render()
        print(f"run_all: wrote {DOC.relative_to(REPO)}")
    if failed:
        print(f"run_all: failed steps (see bench/results/<step>.log): {', '.join(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
