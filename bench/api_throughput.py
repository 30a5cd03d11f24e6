"""API throughput: cheap reads and tool calls with 1, 8 and 32 concurrent clients.

One web process (daphne, as ``serve`` runs it) and one sandbox host on a fresh
installation; the clients are keep-alive HTTP/1.1 connections on one asyncio loop in
this process (cheap enough not to be the bottleneck). Each level runs for ``--seconds``
and reports requests per second and the latency median / p95 / p99 in ms.

    .venv/bin/python bench/api_throughput.py                      # both stacks
    .venv/bin/python bench/api_throughput.py --stack sqlite --seconds 5 --levels 1,8,32

Reads: ``GET /v1/health`` (no database), ``GET /v1/jobs`` (a page of 50 jobs) and
``GET /v1/jobs/{id}``; calls: ``echo`` on the tiny fixture server under bubblewrap,
each client on a sandbox of its own (an MCP server answers one request at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    STACKS,
    daphne_argv,
    free_port,
    http_ok,
    installation,
    machine,
    processes,
    summary,
    wait_until,
    write_report,
)

FIXTURES = REPO / "tests" / "fixtures"
TINY = f"python3 {FIXTURES / 'servers' / 'tiny_server.py'}"
JOBS = 50


class Connection:
    """One keep-alive HTTP/1.1 connection (Content-Length or chunked bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n"
        if data:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            raw = await self.reader.readexactly(int(headers["content-length"]))
        else:
            raw = b""
            while size := int((await self.reader.readline()).strip(), 16):
                raw += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        return status, json.loads(raw) if raw else None

    def close(self) -> None:
        self.writer.close()


async def level(
    port: int, method: str, paths: list[str], body: Any, clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` connections for ``seconds``; client ``i`` requests ``paths[i % n]``."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client(path: str) -> None:
        nonlocal failures
        conn = await Connection.open(port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, _ = await conn.request(method, path, body)
                latencies.append((time.perf_counter() - started) * 1000)
                failures += status != 200
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(paths[n % len(paths)]) for n in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "failed": failures,
        "rps": round(len(latencies) / elapsed, 1),
        **summary(latencies),
    }


async def setup(port: int, sessions: int) -> tuple[str, list[str]]:
    """A job id to read and ``sessions`` ready sandboxes (one per concurrent caller)."""
    conn = await Connection.open(port)
    try:
        job_id = ""
        for n in range(JOBS):  # queued for ever: no worker runs in this bench
            status, job = await conn.request(
                "POST", "/v1/jobs", {"type": "model.inspect", "payload": {"model": f"org/m{n}"}}
            )
            assert status in (200, 201, 202), job
            job_id = job["job_id"]
        created = []
        for _ in range(sessions):
            status, body = await conn.request(
                "POST", "/v1/sandbox/sessions", {"start_command": TINY, "ttl_seconds": 600}
            )
            assert status == 202, body
            created.append(body["session_id"])
        for session_id in created:
            for _ in range(600):
                status, listed = await conn.request(
                    "GET", f"/v1/sandbox/sessions/{session_id}/tools"
                )
                if status == 200 and listed.get("tools"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"sandbox {session_id} never became ready")
        return job_id, created
    finally:
        conn.close()


def measure(stack: str, seconds: float, levels: list[int]) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-api-{stack}-"))
    extra = {"MATRIX_RUNTIME_SANDBOX_RO_BINDS": str(FIXTURES)}
    with installation(stack, data_dir, "api", **extra) as env, processes() as spawn:
        port = free_port()
        spawn(daphne_argv(port), env, data_dir / "web.log")
        spawn([sys.executable, "manage.py", "sandbox_host"], env, data_dir / "host.log")
        wait_until(lambda: http_ok(port), 60, "the web process")
        job_id, sessions = asyncio.run(setup(port, max(levels)))
        call = {"name": "echo", "arguments": {"message": "hello"}}
        targets = {
            "GET /v1/health": ("GET", ["/v1/health"], None),
            "GET /v1/jobs": ("GET", ["/v1/jobs"], None),
            "GET /v1/jobs/{id}": ("GET", [f"/v1/jobs/{job_id}"], None),
            "POST tools/call": (
                "POST", [f"/v1/sandbox/sessions/{s}/tools/call" for s in sessions], call,
            ),
        }  # fmt: skip
        results: dict[str, Any] = {}
        for name, (method, paths, body) in targets.items():
            asyncio.run(level(port, method, paths, body, 1, min(1.0, seconds)))  # warm up
            results[name] = [
                asyncio.run(level(port, method, paths, body, clients, seconds))
                for clients in levels
            ]
        return {"stack": stack, **machine(), "results": results}


def table(report: dict[str, Any]) -> str:
    lines = [
        f"### {report['stack']} ({report['date']}, load {report['load_average']})",
        "",
        "| request | clients | req/s | median ms | p95 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in report["results"].items():
        for row in rows:
            lines.append(
                f"| {name} | {row['clients']} | {row['rps']} | {row['median']} | "
                f"{row['p95']} | {row['p99']} | {row['failed']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=(*STACKS, "both"), default="both")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--json", type=Path, help="also write the results here (run_all)")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    reports = []
    for stack in STACKS if args.stack == "both" else (args.stack,):
        reports.append(measure(stack, args.seconds, levels))
        print(json.dumps(reports[-1]), flush=True)
        print(table(reports[-1]), flush=True)
    write_report(args.json, "api_throughput", reports)


if __name__ == "__main__":
    main()
