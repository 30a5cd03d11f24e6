"""Idle memory: what a fresh ``./dev run`` holds at rest, process by process.

``manage.py serve`` starts on its embedded defaults (SQLite + the embedded valkey bus) in a
new data directory on a free port; once ``/v1/health`` answers and the worker's cluster is
complete it rests ``--rest`` seconds, then every process of its tree is read from
``/proc/<pid>/smaps_rollup``: PSS (shared pages split between the processes that share
them, so the sum is what the tree costs the machine), RSS and USS (its private pages).
The run ends with a SIGINT, as Ctrl-C, which must stop it with exit status 0.

    .venv/bin/python bench/idle_memory.py --json bench/results/idle_memory.json
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ENV_DROPPED, REPO, free_port, http_ok, wait_until, write_report

START_BOUND = 120.0
STOP_BOUND = 60.0
ROLES = (
    ("valkey-server", "bus"),
    ("daphne", "web"),
    ("sandbox_host", "sandbox_host"),
    ("runtime_heartbeat", "cloud_heartbeat"),
    (" worker", "worker"),
)


def parents() -> dict[int, int]:
    found: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return found


def tree(root: int) -> list[tuple[int, int]]:
    """(pid, depth below ``root``) of ``root`` and every descendant."""
    table = parents()
    found, todo = [], [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        found.append((pid, depth))
        todo += [(child, depth + 1) for child, ppid in table.items() if ppid == pid]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def role_of(command: str, depth: int) -> str:
    if depth == 0:
        return "supervisor"
    for marker, role in ROLES:
        if marker in command:
            return role
    return "other"


def memory(pid: int) -> dict[str, float]:
    """PSS, RSS and USS of ``pid`` in MiB (from smaps_rollup)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    uss = fields["Private_Clean"] + fields["Private_Dirty"]
    mib = {"pss": fields["Pss"], "rss": fields["Rss"], "uss": uss}
    return {key: round(value / 1024, 1) for key, value in mib.items()}


def snapshot(root: int) -> list[dict[str, Any]]:
    rows = []
    for pid, depth in tree(root):
        command = cmdline(pid)
        try:
            rows.append({"pid": pid, "role": role_of(command, depth), **memory(pid)})
        except OSError:  # gone between the listing and the read
            continue
        rows[-1]["command"] = command[:120]
    return rows


def worker_started(root: int) -> bool:
    """The worker (one process: its runner threads are threads) is running."""
    return any(" worker" in cmdline(pid) for pid, _ in tree(root))


def serve_env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ENV_DROPPED}
    for key in ("MATRIX_RUNTIME_BUS_PREFIX", "MATRIX_RUNTIME_PORT", "MATRIX_RUNTIME_HOST"):
        env.pop(key, None)
    env.update(
        DJANGO_SETTINGS_MODULE="matrixcloud.settings",
        MATRIX_RUNTIME_DATA_DIR=str(data_dir),
        MATRIX_RUNTIME_MODE="local-dev",
        PYTHONUNBUFFERED="1",
    )
    return env


def measure(rest: float, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="idle-memory-") as tmp:
        data_dir, port, log = Path(tmp) / "data", free_port(), Path(tmp) / "serve.log"
        argv = [sys.executable, "manage.py", "serve", "--port", str(port)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=serve_env(data_dir), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            began = time.monotonic()
            wait_until(lambda: http_ok(port), START_BOUND, "serve to answer")
            up_s = round(time.monotonic() - began, 1)
            wait_until(lambda: worker_started(proc.pid), 60, "the worker")
            time.sleep(rest)
            rows = snapshot(proc.pid)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=STOP_BOUND)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if code != 0:
            raise RuntimeError(f"serve exited with {code}:\n{log.read_text(errors='replace')}")
    return {
        "processes": rows,
        "total_pss_mib": round(sum(row["pss"] for row in rows), 1),
        "count": len(rows),
        "up_s": up_s,
        "rest_s": rest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rest", type=float, default=10.0, help="seconds at rest (10)")
    parser.add_argument("--workers", type=int, default=2, help="the worker's runner threads (2)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    result = measure(args.rest, args.workers)
    print(f"{'pid':>8} {'role':<16} {'PSS':>7} {'RSS':>7} {'USS':>7}  MiB")
    for row in result["processes"]:
        print(f"{row['pid']:>8} {row['role']:<16} {row['pss']:>7} {row['rss']:>7} {row['uss']:>7}")
    print(f"{result['count']} processes, {result['total_pss_mib']} MiB PSS in all")
    print(f"load average {os.getloadavg()[0]:.2f}")
    write_report(args.json, "idle_memory", result)


if __name__ == "__main__":
    main()
