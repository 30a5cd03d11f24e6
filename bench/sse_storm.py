"""SSE connection storm: many subscribers of one sandbox's event stream at once.

Issue #19's SSE rows, measured through HTTP on a fresh installation per stack, started
as ``./dev run`` starts it (``manage.py serve``: web, worker, sandbox host, supervised;
SQLite + the embedded bus, or PostgreSQL + Redis on 127.0.0.1), the rate limiter off.
One tiny sandbox is started per phase; then, from this process (plain asyncio sockets,
one connection per subscriber, all opened at once):

``storm`` (default 200)
    subscribers of ``GET /v1/sandbox/sessions/{id}/events``: the time until every one
    has its ``200`` and its first event (the target: 0.5 s), and how many were refused
    (any other status, or a connection error).
``crowd`` (default 1000)
    as many subscribers of another sandbox: how many got a 503 (the target: none; a storm
    queues while memory allows), and how long until all had their first event.
``close``
    after each phase, ``DELETE`` of the sandbox: per stream, the time from sending the
    DELETE until the stream ended (the original Go server: p95 41-43 ms).

    .venv/bin/python bench/sse_storm.py --stack both --json bench/results/sse_storm.json
    .venv/bin/python bench/sse_storm.py --stack sqlite --storm 200 --crowd 0
"""

from __future__ import annotations

import argparse
import asyncio
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
from bench.sandbox import FIXTURES, TINY

READY_WAIT = 120.0
PHASE_BOUND = 120.0  # seconds any phase may take before the bench gives up on it
TARGET_CONNECT_S = 0.5


class Subscriber(asyncio.Protocol):
    """One raw HTTP/1.1 stream: when its status, its first event and its end arrived."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.buffer = b""
        self.status = 0
        self.error = ""
        self.first_event_at = 0.0
        self.got_first = loop.create_future()
        self.ended = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
            .encode()
        )  # fmt: skip

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.status and b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.status = int(head.split(b" ", 2)[1])
            if self.status != 200:
                self._first(f"HTTP {self.status}")
        if self.status == 200 and not self.got_first.done() and b"\nid: " in b"\n" + self.buffer:
            self.first_event_at = time.perf_counter()
            self._first("")
        if self.buffer.endswith(b"\r\n0\r\n\r\n") or self.buffer == b"0\r\n\r\n":
            self._end()
        if len(self.buffer) > 65536:
            self.buffer = self.buffer[-16:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._first(self.error or "closed before the first event")
        self._end()

    def _first(self, error: str) -> None:
        if not self.got_first.done():
            self.error = error
            self.got_first.set_result(None)

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(time.perf_counter())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_subscribers(port: int, path: str, count: int) -> tuple[list[Subscriber], float]:
    """``count`` streams opened at once; the seconds until all had their first event."""
    loop = asyncio.get_running_loop()
    subscribers = [Subscriber(path, loop) for _ in range(count)]
    started = time.perf_counter()

    async def connect(subscriber: Subscriber) -> None:
        try:
            await loop.create_connection(lambda: subscriber, "127.0.0.1", port)
        except OSError as exc:
            subscriber.error = f"connect: {exc}"
            subscriber._first(subscriber.error)
            subscriber._end()

    await asyncio.gather(*(connect(s) for s in subscribers))
    async with asyncio.timeout(PHASE_BOUND):
        await asyncio.gather(*(s.got_first for s in subscribers))
    ok = [s.first_event_at for s in subscribers if not s.error]
    return subscribers, round((max(ok) - started) if ok else float("nan"), 3)


async def delete_and_wait(port: int, session_id: str, subscribers: list[Subscriber]) -> list[float]:
    """Milliseconds from sending the DELETE until each open stream ended."""
    live = [s for s in subscribers if not s.error]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = time.perf_counter()
    writer.write(
        f"DELETE /v1/sandbox/sessions/{session_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    async with asyncio.timeout(PHASE_BOUND):
        ended = await asyncio.gather(*(s.ended for s in live))
        await reader.read()
    writer.close()
    return [(at - sent) * 1000 for at in ended]


def outcome(subscribers: list[Subscriber]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for subscriber in subscribers:
        if subscriber.error:
            errors[subscriber.error] = errors.get(subscriber.error, 0) + 1
    return errors


async def phase(port: int, session_id: str, count: int) -> dict[str, Any]:
    path = f"/v1/sandbox/sessions/{session_id}/events"
    subscribers, connect_s = await open_subscribers(port, path, count)
    errors = outcome(subscribers)
    await asyncio.sleep(0.5)  # every stream now waits for live events
    close_ms = await delete_and_wait(port, session_id, subscribers)
    for subscriber in subscribers:
        subscriber.close()
    return {
        "subscribers": count,
        "connect_s": connect_s,
        "refused": sum(errors.values()),
        "http_503": errors.get("HTTP 503", 0),
        "errors": errors,
        "delete_to_close_ms": summary(close_ms),
        "closed": len(close_ms),
    }


def api(port: int, method: str, path: str, body: Any = None) -> Any:
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        response = client.request(method, path, json=body)
    response.raise_for_status()
    return response.json()


def ready_session(port: int) -> str:
    created = api(port, "POST", "/v1/sandbox/sessions", {"start_command": " ".join(TINY)})
    session_id = str(created["session_id"])
    deadline = time.monotonic() + READY_WAIT
    while time.monotonic() < deadline:
        snapshot = api(port, "GET", f"/v1/sandbox/sessions/{session_id}")
        if snapshot.get("ready"):
            return session_id
        if snapshot.get("status") not in ("queued", "running"):
            raise RuntimeError(f"session {session_id} ended: {snapshot}")
        time.sleep(0.05)
    raise RuntimeError(f"session {session_id} not ready in {READY_WAIT} s")


def run_stack(stack: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-sse-storm-") as tmp:
        data_dir = Path(tmp)
        extra = {"MATRIX_RUNTIME_SANDBOX_RO_BINDS": str(FIXTURES)}
        with installation(stack, data_dir, "ssestorm", **extra) as env, processes() as spawn:
            port = free_port()
            argv = [sys.executable, "manage.py", "serve", "--port", str(port), "--no-migrate"]
            spawn(argv, env, data_dir / "serve.log")
            wait_until(lambda: http_ok(port), 90, "serve")
            wait_until(lambda: http_ok(port, "/v1/ready"), 90, "serve to be ready")
            time.sleep(2)
            out: dict[str, Any] = {"load_start": machine()["load_average"]}
            for name, count in (("storm", args.storm), ("crowd", args.crowd)):
                if count:
                    out[name] = asyncio.run(phase(port, ready_session(port), count))
                    time.sleep(2)
            out["load_end"] = machine()["load_average"]
            return out


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| stack | phase | streams | all connected (s) | refused | 503 | DELETE→close p50/p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for stack, result in results.items():
        for name in ("storm", "crowd"):
            if name not in result:
                continue
            r = result[name]
            close = r["delete_to_close_ms"]
            rows.append(
                f"| {stack} | {name} | {r['subscribers']} | {r['connect_s']} | {r['refused']} "
                f"| {r['http_503']} | {close.get('median')} / {close.get('p95')} |"
            )
        rows.append(f"| {stack} | load | {result['load_start']} → {result['load_end']} |||||")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=(*STACKS, "both"), default="both")
    parser.add_argument("--storm", type=int, default=200)
    parser.add_argument("--crowd", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stacks = STACKS if args.stack == "both" else (args.stack,)
    results = {stack: run_stack(stack, args) for stack in stacks}
    print(table(results))
    print(f"target: {args.storm} connected within {TARGET_CONNECT_S} s, no 503")
    write_report(args.json, "sse_storm", results)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
