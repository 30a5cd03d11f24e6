"""Sandboxes: what the service adds to a server's start and to a tool call, and how many
live sessions one host holds.

A fresh installation on ``--stack`` (``sqlite``: SQLite + the embedded bus, the default;
``postgres``: PostgreSQL + Redis on 127.0.0.1; ``both``) is migrated and a real web
process (daphne) and sandbox host (``manage.py sandbox_host``, bubblewrap) are started;
everything is driven over HTTP on loopback as the local-dev operator.

``ready``
    ``--rounds`` sessions, one at a time: POST → the ``ready`` event, seen on the SSE
    stream opened right after the POST (and, from the rows, the job's ``created_at`` →
    the ``ready`` event's time). The server's own start-up is the same server started
    directly (no sandbox): spawn → initialize → tools listed, with ``sandbox.mcp``; the
    host also reports, per session, the sandboxed server's own spawn → tools listed.
    Service time = created → ready minus that (paired per session); over direct =
    median(create → ready) - median(direct start-up), which includes bubblewrap.
``calls``
    ``--calls`` ``echo`` calls through the API (HTTP → web → bus → host → MCP → back, on
    one keep-alive connection) against the same number on a directly started server
    over stdio (``McpClient``), in alternating blocks. Overhead = the medians' difference.
``memory``
    ``--idle`` idle sessions of each server at once: the PSS of their process trees
    (bubblewrap and the server) per session.
``capacity``
    Ramp the live sessions of one host (``--levels``, default 50, 100, 200) with the
    tiny fixture server; at each level, once all are ready, ``--probe`` calls to random
    sessions (one at a time); memory is the PSS of the host and of all its sandboxes
    (bubblewrap and the server), and that divided by the sessions: an idle sandbox.

Run from the repository root::

    .venv/bin/python bench/sandbox.py                       # all three, SQLite
    .venv/bin/python bench/sandbox.py --stack both --json out.json
    .venv/bin/python bench/sandbox.py --only calls --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    REPO,
    STACKS,
    as_datetime,
    as_json,
    daphne_argv,
    free_port,
    http_ok,
    installation,
    process_tree,
    processes,
    pss_kib,
    query,
    summary,
    wait_until,
    write_report,
)
from sandbox.mcp import McpClient

FIXTURES = REPO / "tests" / "fixtures"
TINY = ["python3", str(FIXTURES / "servers" / "tiny_server.py")]
EVERYTHING = [
    "node",
    str(FIXTURES / "npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
    "stdio",
]
SERVERS = {"tiny": TINY, "everything": EVERYTHING}
WEB_ENV: dict[str, str] = {}


# --- the installation ----------------------------------------------------------------------
@contextlib.contextmanager
def deployment(stack: str, data_dir: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """A fresh installation on ``stack`` with daphne and one host; yields (web port, env)."""
    global WEB_ENV
    extra = {"MATRIX_RUNTIME_SANDBOX_RO_BINDS": str(FIXTURES)}
    with installation(stack, data_dir, "sandbox", **extra) as env, processes() as spawn:
        WEB_ENV = env
        port = free_port()
        spawn(daphne_argv(port), env, data_dir / "web.log")
        host = spawn([sys.executable, "manage.py", "sandbox_host"], env, data_dir / "host.log")
        wait_until(lambda: http_ok(port), 60, "the web process")
        wait_until(lambda: host_pid_of(env) == host.pid, 60, "the host")
        yield port, env


class Api:
    """A keep-alive JSON client on loopback (the local-dev operator)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def create(self, argv: list[str], ttl: int = 600) -> dict[str, Any]:
        status, body = self.request(
            "POST", "/v1/sandbox/sessions", {"start_command": " ".join(argv), "ttl_seconds": ttl}
        )
        assert status == 202, body
        return dict(body)

    def call(self, session_id: str, message: str) -> tuple[int, Any]:
        body = {"name": "echo", "arguments": {"message": message}}
        return self.request("POST", f"/v1/sandbox/sessions/{session_id}/tools/call", body)

    def delete(self, session_id: str) -> None:
        self.request("DELETE", f"/v1/sandbox/sessions/{session_id}")


def wait_ready_on_stream(port: int, session_id: str) -> float:
    """perf_counter() when the stream delivers ``ready`` (fails on an error event)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/v1/sandbox/sessions/{session_id}/events")
    response = conn.getresponse()
    try:
        while line := response.readline():
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if event["step"] == "ready":
                return time.perf_counter()
            if event["status"] in ("error", "expired", "cancelled"):
                raise RuntimeError(f"session {session_id} ended: {event}")
    finally:
        conn.close()
    raise RuntimeError(f"the stream of {session_id} closed before ready")


# --- direct measurements (no service) --------------------------------------------------------
def direct_argv(argv: list[str]) -> list[str]:
    """``argv`` with the interpreter a sandbox resolves it to (the venv's python3, node)."""
    program = str(Path(sys.prefix) / "bin" / "python3") if argv[0] == "python3" else argv[0]
    return [shutil.which(program) or program, *argv[1:]]


async def direct_start(argv: list[str]) -> float:
    """Seconds from spawn to tools listed, the server started directly."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *direct_argv(argv),
        stdin=-1,
        stdout=-1,
        stderr=-1,
        start_new_session=True,
        cwd=tempfile.gettempdir(),
    )
    try:
        async with McpClient.from_process(proc) as client:
            await client.initialize(timeout=30)
            await client.list_tools(timeout=30)
            return time.perf_counter() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def direct_calls(argv: list[str], blocks: list[int]) -> list[list[float]]:
    """Per block, the seconds of each ``echo`` call on one directly started server."""
    proc = await asyncio.create_subprocess_exec(
        *direct_argv(argv),
        stdin=-1,
        stdout=-1,
        stderr=-1,
        start_new_session=True,
        cwd=tempfile.gettempdir(),
    )
    try:
        async with McpClient.from_process(proc) as client:
            await client.initialize(timeout=30)
            await client.list_tools()
            out = []
            for size in blocks:
                times = []
                for n in range(size):
                    started = time.perf_counter()
                    await client.call_tool("echo", {"message": f"d{n}"})
                    times.append(time.perf_counter() - started)
                out.append(times)
            return out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


# --- the three measurements ---------------------------------------------------------------
def measure_ready(port: int, env: dict[str, str], rounds: int) -> dict[str, Any]:
    """Per server: direct start-up, create → ready, and the service's part of it."""
    api = Api(port)
    out: dict[str, Any] = {}
    for name, argv in SERVERS.items():
        direct = [asyncio.run(direct_start(argv)) * 1000 for _ in range(rounds)]
        wall, rows, handshake, spawn_ms = [], [], [], []
        for _ in range(rounds):
            sent = time.perf_counter()
            created = api.create(argv)
            ready = wait_ready_on_stream(port, created["session_id"])
            wall.append((ready - sent) * 1000)
            row_ms, timings = row_ready(env, created["job_id"])
            rows.append(row_ms)
            handshake.append(timings["handshake_ms"])
            spawn_ms.append(timings["spawn_ms"])
            api.delete(created["session_id"])
        service = [row - own for row, own in zip(rows, handshake, strict=True)]
        out[name] = {
            "direct_start_ms": summary(direct),
            "sandboxed_start_ms": summary(handshake),
            "spawn_ms": summary(spawn_ms),
            "create_to_ready_ms": summary(wall),
            "row_created_to_ready_ms": summary(rows),
            "service_ms": summary(service),
            "over_direct_ms": round(statistics.median(wall) - statistics.median(direct), 1),
        }
    return out


def row_ready(env: dict[str, str], job_id: str) -> tuple[float, dict[str, float]]:
    """From the rows: created → ``ready`` (ms), and the host's start timings."""
    created = query(env, "select created_at from jobs_job where id=?", (job_id,))[0][0]
    ready = query(
        env, "select created_at from jobs_jobevent where job_id=? and step='ready'", (job_id,)
    )[0][0]
    data = query(
        env, "select data from jobs_jobevent where job_id=? and step='mcp_initialize'", (job_id,)
    )[0][0]
    elapsed = as_datetime(ready) - as_datetime(created)
    return elapsed.total_seconds() * 1000, as_json(data)


def measure_calls(port: int, calls: int) -> dict[str, Any]:
    api = Api(port)
    out: dict[str, Any] = {}
    block = 50
    blocks = [block] * max(calls // block, 1)
    for name, argv in SERVERS.items():
        created = api.create(argv)
        wait_ready_on_stream(port, created["session_id"])
        for n in range(20):  # warm up both paths
            api.call(created["session_id"], f"w{n}")
        asyncio.run(direct_calls(argv, [20]))
        through, direct = [], []
        direct_blocks = asyncio.run(direct_calls(argv, blocks))
        for times in direct_blocks:
            direct += [t * 1000 for t in times]
            for n in range(len(times)):
                started = time.perf_counter()
                status, body = api.call(created["session_id"], f"a{n}")
                through.append((time.perf_counter() - started) * 1000)
                assert status == 200, body
        in_process = in_process_calls(created["session_id"], len(through))
        api.delete(created["session_id"])
        out[name] = {
            "api_ms": summary(through),
            "in_process_ms": summary(in_process),
            "direct_ms": summary(direct),
            "overhead_ms": round(statistics.median(through) - statistics.median(direct), 2),
            "in_process_overhead_ms": round(
                statistics.median(in_process) - statistics.median(direct), 2
            ),
        }
    return out


def in_process_calls(session_id: str, count: int) -> list[float]:
    """The same calls from a child configured like the web process, through Django's
    test client (middleware, auth, view, RPC; no socket, no ASGI server)."""
    child = subprocess.run(
        [sys.executable, __file__, "--child-calls", session_id, "--calls", str(count)],
        cwd=REPO,
        env=WEB_ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    return list(json.loads(child.stdout.strip().splitlines()[-1]))


def child_calls(session_id: str, count: int) -> None:
    import django

    django.setup()
    from django.test import Client

    client = Client(REMOTE_ADDR="127.0.0.1")
    url = f"/v1/sandbox/sessions/{session_id}/tools/call"
    times = []
    for n in range(20 + count):
        body = {"name": "echo", "arguments": {"message": f"c{n}"}}
        started = time.perf_counter()
        response = client.post(url, body, content_type="application/json")
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.content
        if n >= 20:
            times.append(elapsed)
    print(json.dumps(times))


def measure_idle_memory(port: int, env: dict[str, str], count: int) -> dict[str, Any]:
    """Per server: ``count`` idle sessions at once, and the PSS of their process trees
    (bubblewrap and the server) divided by ``count``; then they are stopped."""
    host_pid = host_pid_of(env)
    out: dict[str, Any] = {}
    for name, argv in SERVERS.items():
        idle_tree = process_tree(host_pid)
        before = pss_kib(idle_tree)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            live = list(pool.map(lambda _, argv=argv: Api(port).create(argv), range(count)))
        wait_all_ready(env, count, timeout=300)
        time.sleep(2)  # settled: start-up garbage collected, nothing running
        tree = process_tree(host_pid)
        out[name] = {
            "sessions": count,
            "processes": len(tree),
            "per_sandbox_pss_mib": round((pss_kib(tree) - before) / 1024 / count, 2),
        }
        api = Api(port)
        for session in live:
            api.delete(session["session_id"])
        wait_all_ready(env, 0, timeout=120, exactly=True)
        idle = len(idle_tree)
        wait_until(lambda: len(process_tree(host_pid)) <= idle, 60, "stopped sandboxes")  # noqa: B023
        print(json.dumps({name: out[name]}), flush=True)
    return out


def measure_capacity(port: int, env: dict[str, str], levels: list[int], probe: int) -> list[Any]:
    host_pid = host_pid_of(env)
    live: list[dict[str, Any]] = []
    results = []
    baseline = pss_kib([host_pid])
    for level in levels:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            live += list(pool.map(lambda _: Api(port).create(TINY), range(level - len(live))))
        ready_count = wait_all_ready(env, level, timeout=600)
        ramp = time.perf_counter() - started
        api = Api(port)
        times, failures = [], 0
        for _ in range(probe):
            session = random.choice(live)
            t0 = time.perf_counter()
            status, _ = api.call(session["session_id"], "probe")
            times.append((time.perf_counter() - t0) * 1000)
            failures += status != 200
        tree = process_tree(host_pid)
        results.append(
            {
                "sessions": ready_count,
                "ramp_s": round(ramp, 1),
                "call_ms": summary(times),
                "failed_calls": failures,
                "host_pss_mib": round(pss_kib([host_pid]) / 1024, 1),
                "host_growth_mib": round((pss_kib([host_pid]) - baseline) / 1024, 1),
                "sandboxes_pss_mib": round(pss_kib(tree) / 1024, 1),
                "per_sandbox_pss_mib": round(pss_kib(tree) / 1024 / max(1, ready_count), 2),
                "processes": len(tree),
                "load": os.getloadavg(),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def wait_all_ready(env: dict[str, str], count: int, timeout: float, exactly: bool = False) -> int:
    """Wait until ``count`` sessions (or more; ``exactly``: no more) are ready and live."""
    deadline = time.monotonic() + timeout
    while True:
        ready = query(
            env,
            "select count(*) from sandbox_sandboxsession s join jobs_job j on j.id=s.job_id "
            "where s.ready_at is not null and j.status='running'",
        )[0][0]
        failed = query(
            env, "select count(*), max(error) from jobs_job where kind='session' and status='error'"
        )[0]
        if failed[0]:
            raise RuntimeError(f"{failed[0]} sessions failed: {failed[1]}")
        if ready == count or (ready > count and not exactly):
            return int(ready)
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ready} of {count} sessions ready after {timeout} s")
        time.sleep(0.2)


def host_pid_of(env: dict[str, str]) -> int:
    """The pid of the live host (its heartbeat row), 0 before its first beat."""
    rows = query(
        env,
        "select pid from runtimes_processheartbeat where role='sandbox_host' "
        "and stopped_at is null order by seen_at desc",
    )
    return int(rows[0][0]) if rows else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=(*STACKS, "both"), default="sqlite")
    parser.add_argument("--only", choices=("ready", "calls", "memory", "capacity"), action="append")
    parser.add_argument("--idle", type=int, default=10, help="sessions per server (memory)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--levels", default="50,100,200")
    parser.add_argument("--probe", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the results here (run_all)")
    parser.add_argument("--child-calls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_calls:
        child_calls(args.child_calls, args.calls)
        return
    wanted = args.only or ["ready", "calls", "memory", "capacity"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {os.getloadavg()}", flush=True)
    reports: dict[str, Any] = {}
    for stack in STACKS if args.stack == "both" else (args.stack,):
        report: dict[str, Any] = reports.setdefault(stack, {})
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-sandbox-{stack}-"))
        try:
            with deployment(stack, data_dir) as (port, env):
                if "ready" in wanted:
                    report["ready"] = measure_ready(port, env, args.rounds)
                    print(json.dumps({stack: {"ready": report["ready"]}}), flush=True)
                if "calls" in wanted:
                    report["calls"] = measure_calls(port, args.calls)
                    print(json.dumps({stack: {"calls": report["calls"]}}), flush=True)
                if "memory" in wanted:
                    report["memory"] = measure_idle_memory(port, env, args.idle)
                if "capacity" in wanted:
                    levels = [int(level) for level in args.levels.split(",")]
                    report["capacity"] = measure_capacity(port, env, levels, args.probe)
                print(f"# load average after: {os.getloadavg()}", flush=True)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    write_report(args.json, "sandbox", reports)


if __name__ == "__main__":
    main()
