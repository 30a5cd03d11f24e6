"""SSE fan-out: N concurrent subscribers of one job on one daphne, per-event delivery latency.

For each stack (SQLite + the embedded valkey bus; PostgreSQL + Redis on 127.0.0.1) this
script makes a fresh installation (data dir, database, bus), migrates it and starts one
real daphne. A subscriber process (plain asyncio sockets, no Django) opens
``--subscribers`` streams of one job, exactly as a client would (``GET
/v1/jobs/{id}/events``, chunked HTTP/1.1) and waits until every stream has the replayed
``queue`` event. An emitter process (configured like a worker) then emits ``--events``
events at a steady ``--rate`` through ``job_event_emit`` (row, commit, publish), each
carrying its emit wall-clock time, and finally the terminal event.

Latency is measured per (subscriber, event): the subscriber's wall clock when the chunk
arrived minus the emitter's wall clock just before ``job_event_emit`` (same machine, same
clock), so it includes the database write and the publish. It also checks that every
stream received every event once and in order, and records daphne's CPU use while the
events flow and the load average (the bench shares its cores with everything else).

Run from the repository root (PostgreSQL and Redis as in ``./dev test``)::

    .venv/bin/python bench/sse_fanout.py                       # both stacks
    .venv/bin/python bench/sse_fanout.py --only sqlite --subscribers 200

Results are printed as Markdown table rows for bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REDIS_URL, REPO, embedded_bus, postgres_database, pss_kib, write_report

ENV_DROPPED = (
    "DATABASE_URL", "MATRIXCLOUD_DATABASE_URL", "MATRIX_RUNTIME_DB_URL", "MATRIX_RUNTIME_DB_PATH",
    "REDIS_URL", "MATRIX_RUNTIME_API_TOKEN", "MATRIX_RUNTIME_MODE",
)  # fmt: skip
RAW_APP = "bench.sse_fanout:raw_app"  # the baseline (no Django, database or bus)
STREAM_BOUND = 300.0  # seconds any phase may take before the bench gives up


# --- the driver: installation, daphne, the two child processes -------------------------


@contextmanager
def installation(stack: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """The environment of a fresh local-dev installation on ``stack``."""
    env = {key: value for key, value in os.environ.items() if key not in ENV_DROPPED}
    env.update(
        DJANGO_SETTINGS_MODULE="matrixcloud.settings",
        MATRIX_RUNTIME_DATA_DIR=str(data_dir),
        MATRIX_RUNTIME_MODE="local-dev",
        MATRIX_RUNTIME_BUS_PREFIX=f"bench-sse-{os.getpid()}",
        PYTHONUNBUFFERED="1",
    )
    if stack == "baseline":
        yield env
    elif stack == "sqlite":
        with embedded_bus() as bus_url:
            yield {**env, "REDIS_URL": bus_url}
    else:
        with postgres_database(f"bench_sse_{os.getpid()}") as url:
            yield {**env, "REDIS_URL": REDIS_URL, "DATABASE_URL": url}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def daphne(
    env: dict[str, str], port: int, log: Path, app: str = "matrixcloud.asgi:application"
) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
    probe = str(REPO / "bench" / "gc_probe")  # logs the collector's pauses (sitecustomize)
    path = os.pathsep.join(filter(None, [probe, env.get("PYTHONPATH")]))
    env = {**env, "PYTHONPATH": path, "MATRIX_BENCH_GC_LOG": str(gc_log(log))}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, app],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(port, proc, log)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def gc_log(log: Path) -> Path:
    return log.with_suffix(".gc")


def gc_pauses(logs: list[Path], since: float, until: float) -> dict[str, Any]:
    """The web processes' full (oldest generation) collections while events flowed."""
    full = []
    for path in logs:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                at, generation, pause, _ = line.split()
                if int(generation) == 2 and since <= float(at) <= until:
                    full.append(float(pause))
    return {"web_full_gcs": len(full), "web_full_gc_max_ms": round(max(full, default=0.0), 1)}


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (the baseline app has no health endpoint)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("daphne did not answer within 60 s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def warm_up(port: int, path: str) -> None:
    """Open one stream, read its first event, close it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while b"\ndata: " not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"the warm-up stream closed: {received[:300]!r}")
            received += chunk


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


CHILDREN: list[subprocess.Popen[str]] = []


def child(role: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, f"--{role}", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    CHILDREN.append(proc)
    return proc


def stop_children() -> None:
    """Kill whatever child is still running (a run that failed halfway)."""
    while CHILDREN:
        proc = CHILDREN.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def expect(proc: subprocess.Popen[str], prefix: str) -> str:
    """The rest of the child's next stdout line, which must start with ``prefix``."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise RuntimeError(f"expected {prefix!r} from a child, got {line!r}")
    return line[len(prefix) :].strip()


def measure(stack: str, args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-sse-{stack}-"))
    try:
        with installation(stack, data_dir) as env, ExitStack() as servers:
            if stack != "baseline":
                migrate = [sys.executable, "manage.py", "migrate", "-v0"]
                subprocess.run(migrate, cwd=REPO, env=env, check=True)
            app = (
                "bench.sse_fanout:raw_app"
                if stack == "baseline"
                else "matrixcloud.asgi:application"
            )
            ports = [free_port() for _ in range(args.web)]
            webs = [
                servers.enter_context(daphne(env, port, data_dir / f"daphne-{port}.log", app))
                for port in ports
            ]
            servers.callback(stop_children)  # before the servers and the database go
            gc_logs = [gc_log(data_dir / f"daphne-{port}.log") for port in ports]
            return run_phases(stack, args, env, ports, webs, gc_logs)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_phases(
    stack: str,
    args: argparse.Namespace,
    env: dict[str, str],
    ports: list[int],
    webs: list[Any],
    gc_logs: list[Path],
) -> dict[str, Any]:
    pace = ("--events", str(args.events), "--rate", str(args.rate), "--ports", str(ports[0]))
    emitter = child("raw-emitter" if stack == "baseline" else "emitter", env, *pace)
    job_id = expect(emitter, "JOB ")
    path = "/stream" if stack == "baseline" else f"/v1/jobs/{job_id}/events"
    for port in ports if stack != "baseline" else []:  # imports and caches are not per stream
        warm_up(port, path)
    pss_before = pss_kib([web.pid for web in webs])
    subscribers = child("subscribers-child", env, "--path", path,
                        "--ports", ",".join(map(str, ports)),
                        "--subscribers", str(args.subscribers))  # fmt: skip
    connected = float(expect(subscribers, "READY "))
    pss_streams = pss_kib([web.pid for web in webs])
    load_before, started, wall_started = load_average(), time.monotonic(), time.time()
    cpu_before = sum(cpu_seconds(web.pid) for web in webs)
    assert emitter.stdin is not None
    emitter.stdin.write("go\n")
    emitter.stdin.flush()
    emitted = json.loads(expect(emitter, "EMITTED "))
    # While the events flowed (the terminal event and the streams' ends come after).
    web_cpu = sum(cpu_seconds(web.pid) for web in webs) - cpu_before
    elapsed = time.monotonic() - started
    wall_ended = time.time()
    received = json.loads(expect(subscribers, "RESULT "))
    for proc in (emitter, subscribers):
        proc.wait(timeout=STREAM_BOUND)
    latencies = received.pop("latencies_ms")
    return summarize(
        stack=stack,
        args=args,
        latencies=latencies,
        extra={
            **received,
            "connect_s": round(connected, 2),
            "emit_call_median_ms": round(statistics.median(emitted["emit_ms"]), 1),
            "web_cpu_percent": round(100 * web_cpu / elapsed),
            "web_cpu_us_per_delivery": round(1e6 * web_cpu / max(1, len(latencies))),
            "web_rss_mib": round(sum(rss_mib(web.pid) for web in webs)),
            "web_pss_idle_mib": round(pss_before / 1024, 1),
            "web_pss_streams_mib": round(pss_streams / 1024, 1),
            "kib_per_stream": round((pss_streams - pss_before) / args.subscribers, 1),
            "load_before": load_before,
            "load_after": load_average(),
            **gc_pauses(gc_logs, wall_started, wall_ended),
        },
    )


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarize(
    *, stack: str, args: argparse.Namespace, latencies: list[float], extra: dict[str, Any]
) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "stack": stack,
        "web": args.web,
        "subscribers": args.subscribers,
        "events": args.events,
        "rate": args.rate,
        "deliveries": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(percentile(ordered, 0.95), 1),
        "p99_ms": round(percentile(ordered, 0.99), 1),
        "max_ms": round(ordered[-1], 1),
        **extra,
    }


# --- the emitter child: writes events as a worker does -----------------------------------
def emitter(events: int, rate: float) -> None:
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from datetime import timedelta

    from django.utils import timezone

    from accounts.services import local_workspace
    from jobs.events import job_event_emit
    from jobs.models import Job
    from jobs.services import job_finish

    now = timezone.now()
    job = Job.objects.create(
        workspace=local_workspace(),
        type="bench.sse",
        ttl_seconds=600,
        created_at=now,
        expires_at=now + timedelta(seconds=600),
    )
    job_event_emit(job.pk, step="queue", status="queued", message="Job queued")
    print(f"JOB {job.pk}", flush=True)
    sys.stdin.readline()  # go
    emit_ms = []
    start = time.monotonic()
    for number in range(events):
        time.sleep(max(0.0, start + number / rate - time.monotonic()))
        sent = time.time()
        data = {"t": sent, "n": number}
        job_event_emit(job.pk, step="bench", status="running", message=f"event {number}", data=data)
        emit_ms.append(1000 * (time.time() - sent))
    job_finish(job.pk, "complete", result={"events": events})
    print("EMITTED " + json.dumps({"emit_ms": emit_ms}), flush=True)


# --- the baseline: daphne with the least an ASGI app can do --------------------------------
_RAW_STREAMS: set[asyncio.Queue[bytes | None]] = set()


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``--only baseline``: the same wire, fan-out and client with no Django, database or
    bus: ``GET /emit?<seq>`` queues a frame to every stream (``/emit?end`` ends them)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/emit":
        query = scope["query_string"].decode()
        frame = None if query == "end" else raw_frame(int(query), {"data": {"t": time.time()}})
        for queue in list(_RAW_STREAMS):
            queue.put_nowait(frame)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    _RAW_STREAMS.add(queue)
    try:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body: bytes | None = raw_frame(1, {"step": "queue"})
        while body is not None:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            body = await queue.get()
        await send({"type": "http.response.body", "body": b""})
    finally:
        _RAW_STREAMS.discard(queue)


def raw_frame(seq: int, event: dict[str, Any]) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (seq, json.dumps(event, separators=(",", ":")).encode())


def raw_emitter(port: int, events: int, rate: float) -> None:
    print("JOB baseline", flush=True)
    sys.stdin.readline()  # go
    emit_ms, start = [], time.monotonic()
    for number in range(events):
        time.sleep(max(0.0, start + number / rate - time.monotonic()))
        sent = time.time()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/emit?{number + 2}", timeout=30).read()
        emit_ms.append(1000 * (time.time() - sent))
    urllib.request.urlopen(f"http://127.0.0.1:{port}/emit?end", timeout=30).read()
    print("EMITTED " + json.dumps({"emit_ms": emit_ms}), flush=True)


# --- the subscribers child: N raw HTTP/1.1 SSE clients -------------------------------------
@dataclass
class Fanout:
    """What every stream saw, and when all of them had the replayed first event."""

    expected: int
    ready: int = 0
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)
    by_event: dict[int, list[float]] = field(default_factory=dict)

    refused: str = ""  # the first stream the server did not open

    def first_event(self) -> None:
        self.ready += 1
        if self.ready == self.expected:
            self.all_ready.set()

    def refuse(self, why: str) -> None:
        self.refused = self.refused or why
        self.all_ready.set()  # stop waiting: the run is void

    def record(self, seq: int, arrived: float, payload: bytes) -> None:
        if seq == 1:
            self.first_event()
            return
        sent = json.loads(payload).get("data", {}).get("t")
        if sent is not None:
            latency = 1000 * (arrived - sent)
            self.latencies.append(latency)
            self.by_event.setdefault(seq, []).append(latency)


class StreamClient(asyncio.Protocol):
    """One SSE stream, parsed in ``data_received`` (callbacks, not a task per stream, so
    the client's own cost stays small next to the server's)."""

    def __init__(self, path: str, fanout: Fanout) -> None:
        self.path = path
        self.fanout = fanout
        self.seqs: list[int] = []
        self.done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._raw = b""  # bytes not yet de-chunked
        self._body = b""  # de-chunked bytes not yet split into blocks
        self._in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        arrived = time.time()
        self._raw += data
        if not self._in_body and not self._headers():
            return
        self._dechunk()
        *blocks, self._body = self._body.split(b"\n\n")
        for block in blocks:
            if block.startswith(b"id: "):  # not a keepalive comment
                head, _, payload = block.partition(b"\ndata: ")
                self.seqs.append(int(head[4:]))
                self.fanout.record(self.seqs[-1], arrived, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.seqs)

    def _headers(self) -> bool:
        head, found, rest = self._raw.partition(b"\r\n\r\n")
        if not found:
            return False
        if b" 200 " not in head.split(b"\r\n")[0] or b"chunked" not in head.lower():
            self.fanout.refuse(f"unexpected response: {head[:200]!r}")
            self.transport.close()
            return False
        self._raw, self._in_body = rest, True
        return True

    def _dechunk(self) -> None:
        while (end := self._raw.find(b"\r\n")) >= 0:
            size = int(self._raw[:end], 16)
            if len(self._raw) < end + 2 + size + 2:
                return
            self._body += self._raw[end + 2 : end + 2 + size]
            self._raw = self._raw[end + 2 + size + 2 :]
            if size == 0:  # the last chunk: the server ended the stream
                self.transport.close()
                return


async def subscribers(ports: list[int], path: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    fanout = Fanout(expected=count)
    clients = []
    started = time.monotonic()
    for number in range(count):  # one at a time: daphne's listen backlog is Twisted's 50
        _, client = await loop.create_connection(
            lambda: StreamClient(path, fanout), "127.0.0.1", ports[number % len(ports)]
        )
        clients.append(client)
    await asyncio.wait_for(fanout.all_ready.wait(), STREAM_BOUND)
    if fanout.refused:
        raise SystemExit(fanout.refused)
    print(f"READY {time.monotonic() - started:.2f}", flush=True)
    gc.disable()  # the measuring instrument must not pause; it lives for seconds
    cpu = time.process_time()
    streams = await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), STREAM_BOUND)
    expected = list(range(1, max(max(seqs) for seqs in streams) + 1))
    result = {
        "complete_streams": sum(seqs == expected for seqs in streams),
        "client_cpu_s": round(time.process_time() - cpu, 2),
        "latencies_ms": fanout.latencies,
        # per event: [fastest, median, slowest] delivery, to tell a slow fan-out from a pause
        "per_event_ms": [
            [round(min(v)), round(statistics.median(v)), round(max(v))]
            for _, v in sorted(fanout.by_event.items())
        ],
    }
    print("RESULT " + json.dumps(result), flush=True)


# --- entry point -----------------------------------------------------------------------------
def markdown_row(result: dict[str, Any]) -> str:
    keys = ("stack", "web", "subscribers", "events", "rate", "median_ms", "p95_ms", "p99_ms",
            "max_ms", "complete_streams", "connect_s", "emit_call_median_ms", "web_cpu_percent",
            "web_cpu_us_per_delivery", "web_rss_mib", "kib_per_stream", "load_before",
            "load_after")  # fmt: skip
    return "| " + " | ".join(str(result[key]) for key in keys) + " |"


def main() -> None:
    # A stopped bench (Ctrl-C, timeout) still stops its daphne and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("sqlite", "postgres", "baseline"),
                        help="one stack (baseline: daphne, a bare ASGI app)")  # fmt: skip
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2.0, help="events per second")
    parser.add_argument("--json", type=Path, help="also write the results here (run_all)")
    parser.add_argument("--emitter", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw-emitter", dest="raw_emitter", action="store_true",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--web", type=int, default=1, help="daphne processes (clients split)")
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--subscribers-child", dest="subscribers_child", action="store_true",
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.emitter:
        emitter(args.events, args.rate)
        return
    if args.raw_emitter:
        raw_emitter(int(args.ports), args.events, args.rate)
        return
    if args.subscribers_child:
        ports = [int(port) for port in args.ports.split(",")]
        asyncio.run(subscribers(ports, args.path, args.subscribers))
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()}, {os.cpu_count()} CPUs")
    results = []
    for stack in [args.only] if args.only else ["sqlite", "postgres"]:
        results.append(measure(stack, args))
        print(json.dumps(results[-1]))
        print(markdown_row(results[-1]), flush=True)
    write_report(args.json, "sse_fanout", results)


if __name__ == "__main__":
    main()
