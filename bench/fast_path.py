"""The fast path, as a client sees it: plain requests, job creation, tool calls, stops.

Issue #19's table, measured the way its author measured the original Go server: a fresh
installation on each stack, started as ``./dev run`` starts it (``manage.py serve``:
web, worker, sandbox host, supervised), the rate limiter off, and one ``httpx2`` client
on one keep-alive connection making its requests one after another from this process.

``health``
    ``GET /v1/health``: ``--requests`` per round; median and req/s (requests over the
    round's wall time).
``jobs``
    ``POST /v1/jobs`` with an ``mcp.test`` job (the tiny fixture server), ``--jobs`` per
    round; the jobs started are cancelled, and the host settles, between rounds.
``calls``
    ``tools/call echo`` on server-everything: ``--calls`` calls through the API against
    as many on the same server started directly (``sandbox.mcp.McpClient`` over stdio),
    in alternating blocks of 50. Overhead = the medians' difference.
``cpu``
    where a call's time goes: ``--calls`` calls on one server-everything session, and
    the CPU time (user + system, from ``/proc/<pid>/stat``) that each process of the
    installation (web, sandbox host, the server, bus, database, worker) spent per
    call meanwhile; the client's own time too.
``delete``
    ``DELETE /v1/sandbox/sessions/{id}`` of ready tiny sessions, one at a time (the
    answer comes once the session has ended).
``live``
    ``--levels`` live tiny sessions at once (default 50 and 200), then calls spread over
    all of them: every session called ``--per-session`` times, in a random order, one at
    a time; median / p95.

The SSE rows of the issue are measured by ``bench/sse_storm.py``, idle memory by
``bench/idle_memory.py``.

    .venv/bin/python bench/fast_path.py --stack both --json bench/results/fast_path.json
    .venv/bin/python bench/fast_path.py --only calls --calls 300
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx2

from bench.common import (
    REPO,
    STACKS,
    free_port,
    http_ok,
    installation,
    machine,
    processes,
    summary,
    wait_until,
    write_report,
)
from bench.sandbox import EVERYTHING, FIXTURES, TINY, direct_calls

STEPS = ("health", "jobs", "calls", "cpu", "delete", "live")
READY_WAIT = 120.0


class Client:
    """One keep-alive HTTP/1.1 connection, requests in sequence (the issue's client)."""

    def __init__(self, port: int) -> None:
        self.http = httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def timed(self, method: str, path: str, body: Any = None) -> tuple[float, httpx2.Response]:
        started = time.perf_counter()
        response = self.http.request(method, path, json=body)
        return (time.perf_counter() - started) * 1000, response

    def create(self, argv: list[str], ttl: int = 600) -> str:
        body = {"start_command": " ".join(argv), "ttl_seconds": ttl}
        response = self.http.post("/v1/sandbox/sessions", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["session_id"])

    def wait_ready(self, session_id: str, timeout: float = READY_WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snapshot = self.http.get(f"/v1/sandbox/sessions/{session_id}").json()
            if snapshot.get("ready"):
                return
            if snapshot.get("status") not in ("queued", "running"):
                raise RuntimeError(f"session {session_id} ended: {snapshot}")
            time.sleep(0.05)
        raise RuntimeError(f"session {session_id} not ready in {timeout} s")

    def call(self, session_id: str, message: str) -> float:
        body = {"name": "echo", "arguments": {"message": message}}
        ms, response = self.timed("POST", f"/v1/sandbox/sessions/{session_id}/tools/call", body)
        assert response.status_code == 200, response.text
        return ms

    def delete(self, session_id: str) -> float:
        ms, response = self.timed("DELETE", f"/v1/sandbox/sessions/{session_id}")
        assert response.status_code == 200, response.text
        return ms


def settle(seconds: float = 1.0) -> None:
    time.sleep(seconds)


def measure_health(client: Client, requests: int, rounds: int) -> dict[str, Any]:
    for _ in range(200):
        client.timed("GET", "/v1/health")
    times: list[float] = []
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            ms, response = client.timed("GET", "/v1/health")
            assert response.status_code == 200
            times.append(ms)
        rates.append(round(requests / (time.perf_counter() - started), 1))
    return {"ms": summary(times), "req_per_s": rates}


def measure_jobs(client: Client, jobs: int, rounds: int) -> dict[str, Any]:
    body = {"type": "mcp.test", "payload": {"start_command": " ".join(TINY)}, "ttl_seconds": 600}
    times: list[float] = []
    for _ in range(rounds):
        created = []
        for _ in range(jobs):
            ms, response = client.timed("POST", "/v1/jobs", body)
            assert response.status_code in (200, 201, 202), response.text
            times.append(ms)
            created.append(response.json()["job_id"])
        for job_id in created:
            client.http.post(f"/v1/jobs/{job_id}/cancel")
        settle(3)
    return {"ms": summary(times), "jobs": len(times)}


def measure_calls(client: Client, calls: int) -> dict[str, Any]:
    session_id = client.create(EVERYTHING)
    client.wait_ready(session_id)
    for n in range(50):
        client.call(session_id, f"w{n}")
    blocks = [50] * max(calls // 50, 1)
    direct_blocks = asyncio.run(direct_calls(EVERYTHING, blocks))
    through: list[float] = []
    direct: list[float] = []
    for block in direct_blocks:
        direct += [t * 1000 for t in block]
        through += [client.call(session_id, f"a{n}") for n in range(len(block))]
    client.delete(session_id)
    return {
        "api_ms": summary(through),
        "direct_ms": summary(direct),
        "overhead_ms": round(statistics.median(through) - statistics.median(direct), 3),
    }


def measure_delete(client: Client, count: int) -> dict[str, Any]:
    sessions = start_many(client, TINY, count)
    return {"ms": summary([client.delete(session_id) for session_id in sessions])}


def start_many(client: Client, argv: list[str], count: int) -> list[str]:
    """``count`` ready sessions, started 8 at a time (each worker its own connection)."""
    port = client.http.base_url.port

    def one(_: int) -> str:
        own = Client(port)
        session_id = own.create(argv)
        own.wait_ready(session_id)
        own.http.close()
        return session_id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_roles(root: int, database: str) -> dict[int, str]:
    """The processes under ``root`` (serve) by role, with the bus and the PostgreSQL
    backends of ``database`` (the machine's Redis is shared: other users count too)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(stat[1]), []).append(pid)
        commands[pid] = raw.replace(b"\0", b" ").decode(errors="replace")
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    roles: dict[int, str] = {}
    for pid, cmd in commands.items():
        if pid in tree:
            for marker, role in ROLE_MARKERS:
                if marker in cmd:
                    roles[pid] = role
                    break
            else:
                roles[pid] = "other (serve, sandbox, ...)"
        elif "redis-server 127.0.0.1:6379" in cmd:
            roles[pid] = "bus"
        elif database and cmd.startswith("postgres:") and f" {database} " in cmd:
            roles[pid] = "database"
    return roles


ROLE_MARKERS = (
    ("daphne", "web"),
    ("uvicorn", "web"),
    ("sandbox_host", "sandbox host"),
    ("server-everything", "MCP server"),
    ("valkey-server", "bus"),
    ("worker", "worker"),
)


def measure_cpu(client: Client, calls: int, serve: int, database: str) -> dict[str, Any]:
    """CPU milliseconds per tool call, per role (the profile of a call's hops)."""
    session_id = client.create(EVERYTHING)
    client.wait_ready(session_id)
    for n in range(50):
        client.call(session_id, f"w{n}")
    settle(2)
    roles = process_roles(serve, database)
    before = {pid: cpu_seconds(pid) for pid in roles}
    own = time.process_time()
    started = time.perf_counter()
    times = [client.call(session_id, f"c{n}") for n in range(calls)]
    wall = time.perf_counter() - started
    settle(1)  # the host records its last batch
    per_role: dict[str, float] = {}
    for pid, role in roles.items():
        spent = cpu_seconds(pid) - before[pid]
        per_role[role] = per_role.get(role, 0.0) + spent
    client.http.delete(f"/v1/sandbox/sessions/{session_id}")
    return {
        "calls": calls,
        "ms": summary(times),
        "wall_ms_per_call": round(wall * 1000 / calls, 3),
        "cpu_ms_per_call": {
            **{role: round(sec * 1000 / calls, 3) for role, sec in sorted(per_role.items())},
            "client": round((time.process_time() - own) * 1000 / calls, 3),
        },
    }


def measure_live(client: Client, levels: list[int], per_session: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    live: list[str] = []
    for level in levels:
        live += start_many(client, TINY, level - len(live))
        settle(2)
        order = [s for s in live for _ in range(per_session)]
        random.shuffle(order)
        times = [client.call(session_id, f"l{n}") for n, session_id in enumerate(order)]
        out[str(level)] = {"ms": summary(times), "calls": len(times)}
    for session_id in live:
        client.http.delete(f"/v1/sandbox/sessions/{session_id}")
    return out


def run_stack(stack: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-fast-") as tmp:
        data_dir = Path(tmp)
        extra = {"MATRIX_RUNTIME_SANDBOX_RO_BINDS": str(FIXTURES)}
        with installation(stack, data_dir, "fast", **extra) as env, processes() as spawn:
            port = free_port()
            argv = [sys.executable, "manage.py", "serve", "--port", str(port), "--no-migrate"]
            serve = spawn(argv, env, data_dir / "serve.log")
            wait_until(lambda: http_ok(port), 90, "serve")
            wait_until(lambda: http_ok(port, "/v1/ready"), 90, "serve to be ready")
            settle(3)
            client = Client(port)
            out: dict[str, Any] = {"load_start": machine()["load_average"]}
            steps = args.only or STEPS
            if "health" in steps:
                out["health"] = measure_health(client, args.requests, args.rounds)
            if "jobs" in steps:
                out["jobs"] = measure_jobs(client, args.jobs, args.rounds)
            if "calls" in steps:
                out["calls"] = measure_calls(client, args.calls)
            if "cpu" in steps:
                database = env.get("DATABASE_URL", "").rsplit("/", 1)[-1]
                out["cpu"] = measure_cpu(client, args.calls, serve.pid, database)
            if "delete" in steps:
                out["delete"] = measure_delete(client, args.deletes)
            if "live" in steps:
                out["live"] = measure_live(client, args.levels, args.per_session)
            out["load_end"] = machine()["load_average"]
            client.http.close()
            return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=(*STACKS, "both"), default="both")
    parser.add_argument("--only", action="append", choices=STEPS)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--deletes", type=int, default=20)
    parser.add_argument(
        "--levels", type=lambda v: [int(x) for x in v.split(",")], default=[50, 200]
    )
    parser.add_argument("--per-session", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stacks = STACKS if args.stack == "both" else (args.stack,)
    results = {stack: run_stack(stack, args) for stack in stacks}
    for stack, result in results.items():
        print(stack, result)
    write_report(args.json, "fast_path", results)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
