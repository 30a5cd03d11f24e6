"""A storm of event-stream subscribers against a real daphne, a sandbox host, the bus.

Hundreds of clients open one sandbox's stream at once: every one gets its ``200`` and
the replayed history (no refusal, no 503: a stream holds no thread and no database
connection), a ``DELETE`` of the sandbox closes all of them after the terminal event,
and clients that vanish mid-stream are dropped (the process leaves the bus group once
the last of them is gone).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from django.conf import settings

from jobs.events import job_group
from matrixcloud.lib import sse
from sandbox.models import SandboxSession
from tests.jobs.test_jobs_worker import worker_env
from tests.jobs.test_sse import Server, start_daphne
from tests.sandbox_processes import Host, end_all_sessions, python_server, running_host

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STORM = 300
BOUND = 60.0  # seconds for any phase of a storm
READY_BOUND = 30.0


@dataclass
class Subscriber:
    """One raw HTTP/1.1 client of an event stream: its status and what it received."""

    status: int = 0
    body: bytes = b""
    ended: bool = False
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)
    reader: asyncio.StreamReader | None = field(default=None, repr=False)

    async def open(self, port: int, path: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])

    async def read_until(self, marker: bytes) -> None:
        assert self.reader is not None
        while marker not in self.body:
            chunk = await self.reader.read(65536)
            if not chunk:
                self.ended = True
                return
            self.body += chunk

    async def read_to_end(self) -> None:
        assert self.reader is not None
        while chunk := await self.reader.read(65536):
            self.body += chunk
            if self.body.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of the stream
                break
        self.ended = True

    def events(self) -> list[dict[str, object]]:
        return [
            json.loads(line[len(b"data: ") :])
            for line in self.body.split(b"\n")
            if line.startswith(b"data: ")
        ]

    def vanish(self) -> None:
        assert self.writer is not None
        self.writer.transport.abort()  # no FIN handshake wait, as a killed client


@pytest.fixture(scope="module")
def live(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Host]]:
    """A local-dev daphne and a host, both on this test database."""
    database = {
        k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
    }
    server = start_daphne({**database, "MATRIX_RUNTIME_RATE_LIMIT_RPM": "0"})
    try:
        server.wait_ready()
        with running_host(tmp_path_factory.mktemp("host") / "host.log") as host:
            yield server, host
    finally:
        server.stop()


@pytest.fixture
def server(live: tuple[Server, Host]) -> Iterator[Server]:
    yield live[0]
    end_all_sessions()


def api(server: Server, method: str, path: str, body: object = None) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=BOUND) as response:  # noqa: S310 (loopback)
        answer: dict[str, object] = json.loads(response.read())
        return answer


def ready_session(server: Server) -> str:
    created = api(server, "POST", "/v1/sandbox/sessions", {"start_command": tiny()})
    session_id = str(created["session_id"])
    deadline = time.monotonic() + READY_BOUND
    while not api(server, "GET", f"/v1/sandbox/sessions/{session_id}").get("ready"):
        assert time.monotonic() < deadline, f"session {session_id} not ready"
        time.sleep(0.05)
    return session_id


def tiny() -> str:
    return python_server("tiny_server.py")


def events_path(session_id: str) -> str:
    return f"/v1/sandbox/sessions/{session_id}/events"


async def storm(server: Server, session_id: str, count: int) -> list[Subscriber]:
    """``count`` subscribers opened at once, each up to its replayed ``ready`` event."""
    subscribers = [Subscriber() for _ in range(count)]
    path = events_path(session_id)
    async with asyncio.timeout(BOUND):
        await asyncio.gather(*(s.open(server.port, path) for s in subscribers))
        await asyncio.gather(*(s.read_until(b'"step":"ready"') for s in subscribers))
    return subscribers


def bus_members(job_id: str) -> int:
    """How many processes' channels follow the job's group on the bus."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.zcard(f"{settings.MATRIX_BUS_PREFIX}:group:{job_group(job_id)}"))
    finally:
        client.close()


def test_a_storm_of_subscribers_all_get_the_history_and_a_delete_closes_every_stream(
    server: Server,
) -> None:
    session_id = ready_session(server)

    async def scenario() -> tuple[list[Subscriber], float]:
        subscribers = await storm(server, session_id, STORM)
        deleted = asyncio.to_thread(api, server, "DELETE", f"/v1/sandbox/sessions/{session_id}")
        started = time.monotonic()
        async with asyncio.timeout(BOUND):
            await asyncio.gather(deleted, *(s.read_to_end() for s in subscribers))
        return subscribers, time.monotonic() - started

    subscribers, closing = asyncio.run(scenario())
    assert [s.status for s in subscribers] == [200] * STORM
    assert all(s.ended for s in subscribers)
    histories = {json.dumps(s.events()) for s in subscribers}
    assert len(histories) == 1  # every one the same events, in the same order
    last = subscribers[0].events()[-1]
    assert (last["step"], last["status"]) == ("cancel", "cancelled")
    assert closing < 10


def test_subscribers_that_vanish_are_dropped_from_the_hub(server: Server) -> None:
    session_id = ready_session(server)
    job_id = SandboxSession.objects.values_list("job_id", flat=True).get(pk=session_id)

    async def scenario() -> None:
        subscribers = await storm(server, session_id, 50)
        assert [s.status for s in subscribers] == [200] * 50
        assert bus_members(job_id) == 1
        for subscriber in subscribers:
            subscriber.vanish()

    asyncio.run(scenario())
    deadline = time.monotonic() + 10
    while bus_members(job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The hub leaves the group once its last subscriber is gone: none of the 50 lingers.
    assert bus_members(job_id) == 0


# --- shared reads ----------------------------------------------------------------------
class GatedRead:
    """A read that blocks until let go, counting how often it ran (a query stand-in)."""

    def __init__(self) -> None:
        self.calls = 0
        self.count = threading.Lock()
        self.began = threading.Event()
        self.go = threading.Event()

    def __call__(self, after: int) -> list[sse.Frame]:
        with self.count:  # reads run in threads at once: each gets its own number
            self.calls += 1
            number = self.calls
        self.began.set()
        assert self.go.wait(BOUND), "never let go"
        return [sse.Frame.of(after + 1, {"n": number})]


def test_identical_concurrent_reads_share_one_query() -> None:
    shared, read = sse.SharedReads(), GatedRead()

    async def scenario() -> list[tuple[sse.Frame, ...]]:
        since = time.monotonic()
        waiters = [asyncio.ensure_future(shared.run("k", since, read, 0)) for _ in range(50)]
        await asyncio.sleep(0.05)
        waiters[0].cancel()  # one stream gone: the others still get the read
        read.go.set()
        async with asyncio.timeout(BOUND):
            return list(await asyncio.gather(*waiters[1:]))

    results = asyncio.run(scenario())
    assert read.calls == 1
    assert results == [(sse.Frame.of(1, {"n": 1}),)] * 49


def test_a_read_that_began_before_a_stream_subscribed_is_not_shared_with_it() -> None:
    shared, read = sse.SharedReads(), GatedRead()

    async def scenario() -> tuple[tuple[sse.Frame, ...], tuple[sse.Frame, ...]]:
        early = asyncio.ensure_future(shared.run("k", time.monotonic(), read, 0))
        await asyncio.to_thread(read.began.wait, BOUND)
        late = asyncio.ensure_future(shared.run("k", time.monotonic(), read, 0))
        other = asyncio.ensure_future(shared.run("other", 0.0, read, 5))
        read.go.set()
        async with asyncio.timeout(BOUND):
            first, second, _ = await asyncio.gather(early, late, other)
        return first, second

    first, second = asyncio.run(scenario())
    assert read.calls == 3  # the late subscriber's read and another key's ran by themselves
    assert first != second
