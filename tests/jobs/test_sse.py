"""Job event streams (SSE) against a real daphne, a real database and a real bus.

Two daphne processes share this test's database and bus: a local-dev one (anonymous
operator, 0.5 s keepalive) and a production-mode one (credentials required, 30 s
keepalive, so anything it delivers quickly was not found by a keepalive re-read). Jobs
and events are written here with the real services; the streams are read over HTTP.
On SQLite the in-memory test database is copied to a file both processes open; on
PostgreSQL the children use the test database itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import login
from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User, Workspace
from accounts.services import local_workspace
from jobs.choices import JobStatus
from jobs.events import event_message, job_event_emit, job_group, publish
from jobs.models import Job, JobEvent
from jobs.services import job_finish
from jobs.streams import job_event_frames
from matrixcloud.lib import sse
from tests import REPO_ROOT
from tests.factories import signup
from tests.sse_client import Block, Stream, python_client_events

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = REPO_ROOT
OPERATOR_TOKEN = "mxc-sse-test-operator-token"
START_BOUND = 30.0
DROPPED = (
    "DATABASE_URL", "MATRIXCLOUD_DATABASE_URL", "MATRIX_RUNTIME_DB_URL",
    "MATRIX_RUNTIME_DB_PATH", "MATRIX_RUNTIME_API_TOKEN", "MATRIX_RUNTIME_API_TOKEN_FILE",
    "MATRIX_RUNTIME_MODE", "MATRIX_RUNTIME_PORT", "PORT",
)  # fmt: skip


# --- the shared database and the servers ---------------------------------------------
@contextlib.contextmanager
def sqlite_file_copy(path: Path) -> Iterator[None]:
    """Point this process at a file copy of the in-memory test database; restore after.

    (Closing an in-memory SQLite database destroys it, so its connection is kept aside.)
    """
    connection.ensure_connection()
    memory = connection.connection
    target = sqlite3.connect(path)
    memory.backup(target)
    target.close()
    name = connection.settings_dict["NAME"]
    connection.connection = None
    connection.settings_dict["NAME"] = str(path)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = name
        connection.connection = memory


def postgres_url() -> str:
    db = connection.settings_dict
    credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="module")
def shared_db(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The environment that points a child process at this process's database."""
    with django_db_blocker.unblock():
        if connection.vendor == "sqlite":
            path = tmp_path_factory.mktemp("sse-db") / "db.sqlite3"
            with sqlite_file_copy(path):
                yield {"MATRIX_RUNTIME_DB_PATH": str(path)}
        else:
            yield {"DATABASE_URL": postgres_url()}


@dataclass
class Server:
    """A daphne child on a loopback port."""

    port: int
    proc: subprocess.Popen[bytes]

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Stream:
        return Stream(self.port, path, headers)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_BOUND
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "daphne exited during start-up"
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v1/health")
                if conn.getresponse().status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"daphne did not answer within {START_BOUND} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_daphne(env: dict[str, str]) -> Server:
    from matrixcloud.lib.bus import free_port

    port = free_port()
    child_env = {key: value for key, value in os.environ.items() if key not in DROPPED}
    child_env.update(env, PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="matrixcloud.settings")
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
    proc = subprocess.Popen(
        [*argv, "matrixcloud.asgi:application"],
        cwd=REPO,
        env=child_env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    return Server(port, proc)


@pytest.fixture(scope="module")
def servers(shared_db: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """(local-dev server, production-mode server), both on the shared database."""
    local = start_daphne(
        {
            **shared_db,
            "MATRIX_RUNTIME_MODE": "local-dev",
            "MATRIX_RUNTIME_SSE_KEEPALIVE_SECONDS": "0.5",
        }
    )
    production = start_daphne(
        {
            **shared_db,
            "MATRIX_RUNTIME_MODE": "customer-agent",
            "MATRIX_RUNTIME_API_TOKEN": OPERATOR_TOKEN,
            "MATRIX_RUNTIME_SSE_KEEPALIVE_SECONDS": "30",
        }
    )
    try:
        local.wait_ready()
        production.wait_ready()
        yield local, production
    finally:
        local.stop()
        production.stop()


@pytest.fixture
def local(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture
def production(servers: tuple[Server, Server]) -> Server:
    return servers[1]


# --- jobs and events -----------------------------------------------------------------
def make_job(workspace: Workspace | None = None, ttl: int = 120) -> Job:
    """A queued job with its ``queue`` event (seq 1), as ``job_enqueue`` writes it."""
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(
            workspace=workspace or local_workspace(),
            type="test.sse",
            ttl_seconds=ttl,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        job_event_emit(job.pk, step="queue", status=JobStatus.QUEUED, message="Job queued")
    return job


def emit(job: Job, count: int = 1, step: str = "work") -> None:
    for number in range(count):
        job_event_emit(
            job.pk, step=step, status="running", message=f"{step} {number}", data={"n": number}
        )


def emit_burst(job: Job, count: int, padding: int = 0) -> None:
    """``count`` event rows in one insert, each then pushed as ``job_event_emit`` pushes
    it after commit (its three queries per event would dominate the test's time)."""
    with transaction.atomic():
        last = Job.objects.select_for_update().values_list("last_seq", flat=True).get(pk=job.pk)
        rows = JobEvent.objects.bulk_create(
            JobEvent(
                job_id=job.pk,
                seq=last + number,
                step="burst",
                status="running",
                message=f"burst {number}",
                data={"n": number, "padding": "x" * padding},
            )
            for number in range(1, count + 1)
        )
        Job.objects.filter(pk=job.pk).update(last_seq=last + count)
    for row in rows:
        publish(event_message(row))


def emit_in_loop(job: Job, count: int, padding: int = 0) -> None:
    """``emit_burst`` from a thread under an event loop, as an asyncio emitter does (each
    publish then reuses that loop's bus client instead of opening a new one)."""

    def write() -> None:
        emit_burst(job, count, padding)
        close_connection()

    asyncio.run(sync_to_async(write)())


def close_connection() -> None:
    """Close the calling thread's database connection (a helper thread's, here)."""
    connection.close()


def insert_unpublished(job: Job, message: str) -> int:
    """An event row written as ``job_event_emit`` writes it, but never pushed on the bus."""
    with transaction.atomic():
        Job.objects.filter(pk=job.pk).update(last_seq=F("last_seq") + 1)
        seq = Job.objects.values_list("last_seq", flat=True).get(pk=job.pk)
        JobEvent.objects.create(
            job_id=job.pk, seq=seq, step="lost", status="running", message=message
        )
    return seq


def finish(job: Job) -> None:
    assert job_finish(job.pk, JobStatus.COMPLETE, result={"ok": True})


def path(job: Job, query: str = "") -> str:
    return f"/v1/jobs/{job.pk}/events{query}"


def ids(blocks: list[Block]) -> list[int | None]:
    return [block.id for block in blocks]


def wire(job: Job) -> list[dict[str, Any]]:
    return [event.as_wire() for event in JobEvent.objects.filter(job=job).order_by("seq")]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def operator() -> dict[str, str]:
    return bearer(OPERATOR_TOKEN)


# --- replay, live, close -------------------------------------------------------------
def test_replays_history_then_follows_live_events_and_closes_after_the_terminal_one(
    local: Server,
) -> None:
    job = make_job()
    emit(job, 2)
    with local.stream(path(job)) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.headers["Cache-Control"] == "no-cache"
        assert stream.headers["X-Accel-Buffering"] == "no"
        replayed = stream.events(3)
        emit(job, 3)
        finish(job)
        finished_at = time.monotonic()
        live = stream.events()
        closed_after = time.monotonic() - finished_at
    assert ids(replayed + live) == list(range(1, 8))
    assert [block.data for block in replayed + live] == wire(job)
    assert live[-1].data == {"step": "complete", "status": "complete", "message": "Job complete"}
    assert closed_after < 3


def test_every_event_is_an_id_line_and_one_data_line_and_nothing_is_named(local: Server) -> None:
    job = make_job()
    emit(job, 2)
    insert_unpublished(job, "line one\nline two \u2028 caf\u00e9")
    finish(job)
    with local.stream(path(job)) as stream:
        blocks = list(stream.blocks())
    events = [block for block in blocks if not block.is_keepalive]
    assert [block.lines[0] for block in events] == [f"id: {seq}" for seq in range(1, 6)]
    assert all(len(block.lines) == 2 and block.lines[1].startswith("data: ") for block in events)
    assert not any(line.startswith(("event:", "retry:")) for b in blocks for line in b.lines)
    message = "line one\nline two \u2028 caf\u00e9"
    assert events[3].data == {"step": "lost", "status": "running", "message": message}


def test_resume_after_last_event_id_from_the_header_or_the_query(local: Server) -> None:
    job = make_job()
    emit(job, 4)
    finish(job)
    with local.stream(path(job), {"Last-Event-ID": "3"}) as stream:
        assert ids(stream.events()) == [4, 5, 6]
    with local.stream(path(job, "?last_event_id=5")) as stream:
        assert ids(stream.events()) == [6]
    # A browser reconnecting to a URL that carries the parameter sends the newer header.
    with local.stream(path(job, "?last_event_id=1"), {"Last-Event-ID": "4"}) as stream:
        assert ids(stream.events()) == [5, 6]


def test_resume_while_live_gets_only_later_events(local: Server) -> None:
    job = make_job()
    emit(job, 2)
    with local.stream(path(job), {"Last-Event-ID": "2"}) as stream:
        assert ids(stream.events(1)) == [3]
        emit(job, 1)
        finish(job)
        assert ids(stream.events()) == [4, 5]


def test_last_event_id_of_the_terminal_event_is_204(local: Server) -> None:
    job = make_job()
    finish(job)
    for last in ("2", "7"):
        with local.stream(path(job), {"Last-Event-ID": last}) as stream:
            assert stream.status == 204
            assert stream.response.read() == b""
    with local.stream(path(job), {"Last-Event-ID": "1"}) as stream:
        assert ids(stream.events()) == [2]


def test_a_malformed_last_event_id_is_a_json_400(local: Server) -> None:
    job = make_job()
    with local.stream(path(job), {"Last-Event-ID": "two"}) as stream:
        assert stream.status == 400
        assert stream.json() == {
            "error": "Last-Event-ID must be a non-negative integer",
            "status": 400,
        }


def test_keepalive_comments_while_idle(local: Server) -> None:
    job = make_job()
    with local.stream(path(job)) as stream:
        blocks = stream.blocks()
        assert next(blocks).id == 1
        started = time.monotonic()
        assert next(blocks).is_keepalive
        assert next(blocks).is_keepalive
        assert 0.6 < time.monotonic() - started < 3
        finish(job)
        rest = [block for block in blocks if not block.is_keepalive]
    assert ids(rest) == [2]


def bus_members(job: Job) -> int:
    """How many channels (one per process with subscribers) follow the job's group."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.zcard(f"{settings.MATRIX_BUS_PREFIX}:group:{job_group(job.pk)}"))
    finally:
        client.close()


def test_one_bus_membership_per_process_released_when_the_last_client_leaves(
    local: Server,
) -> None:
    job = make_job()
    with local.stream(path(job)) as first, local.stream(path(job)) as second:
        assert ids(first.events(1)) == ids(second.events(1)) == [1]
        assert bus_members(job) == 1
    deadline = time.monotonic() + 5
    while bus_members(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bus_members(job) == 0


def database_connections(server: Server) -> int:
    """Connections to the test database: the server's (SQLite: its open handles on the
    file), or everyone's (PostgreSQL: this test process holds one or two)."""
    if connection.vendor == "sqlite":
        db_file = os.path.realpath(connection.settings_dict["NAME"])
        fds = Path(f"/proc/{server.proc.pid}/fd").iterdir()
        return sum(os.path.realpath(fd) == db_file for fd in fds)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def test_open_streams_hold_no_database_connection_each(local: Server) -> None:
    job = make_job()
    streams = [local.stream(path(job)) for _ in range(20)]
    try:
        assert all(ids(stream.events(1)) == [1] for stream in streams)
        assert database_connections(local) < 12  # not one per stream
    finally:
        for stream in streams:
            stream.close()


# --- the database is the truth -------------------------------------------------------
def test_a_lost_push_is_recovered_from_the_rows_at_the_next_push(production: Server) -> None:
    job = make_job()
    with production.stream(path(job), operator()) as stream:
        assert ids(stream.events(1)) == [1]
        insert_unpublished(job, "never pushed")
        emit(job, 1)
        started = time.monotonic()
        recovered = stream.events(2)
        # The keepalive re-read is 30 s away: this came from the gap in sequence numbers.
        assert time.monotonic() - started < 5
    assert ids(recovered) == [2, 3]
    assert recovered[0].data == {"step": "lost", "status": "running", "message": "never pushed"}


def test_a_lost_last_push_arrives_by_the_next_keepalive_tick(local: Server) -> None:
    job = make_job()
    with local.stream(path(job)) as stream:
        assert ids(stream.events(1)) == [1]
        insert_unpublished(job, "never pushed")
        started = time.monotonic()
        assert ids(stream.events(1)) == [2]
        assert time.monotonic() - started < 3


def test_a_slow_reader_gets_every_event_in_order(local: Server) -> None:
    """The client reads nothing while 2,000 events (about 2 MB) are emitted, then reads
    them in small sips: every one arrives, once, in order."""
    job = make_job()
    with local.stream(path(job)) as stream:
        assert ids(stream.events(1)) == [1]
        emit_in_loop(job, 2000, padding=1000)
        finish(job)
        received = []
        for block in stream.blocks():
            if block.id is not None:
                received.append(block.id)
                if block.id % 100 == 0:
                    time.sleep(0.01)
    assert received == list(range(2, 2003))


def test_a_subscriber_that_overflows_its_buffer_rereads_the_rows() -> None:
    """In process: a hub with room for 8 frames, 300 pushes while its stream is away."""
    job = make_job()
    group = job_group(job.pk)
    hubs = sse.HubRegistry(lambda message: job_group(str(message["job_id"])), capacity=8)

    def seqs(chunk: bytes) -> list[int]:
        return [int(seq) for seq in re.findall(rb"^id: (\d+)$", chunk, re.MULTILINE)]

    async def scenario() -> list[int]:
        read = sync_to_async(partial(job_event_frames, job.pk))
        stream = sse.DurableStream(hubs, group, read, after=0, lifetime=30, keepalive=30)
        chunks = stream.chunks()
        seen = seqs(await anext(chunks))
        await sync_to_async(emit_burst)(job, 300)
        await sync_to_async(finish)(job)
        await asyncio.sleep(0.5)  # the hub has pushed (and dropped) what it could
        assert stream.subscription is not None
        assert stream.subscription.lagging
        seen += [seq async for chunk in chunks for seq in seqs(chunk)]
        await asyncio.sleep(0.1)
        assert hubs.current().subscriber_count(group) == 0
        await sync_to_async(close_connection)()
        return seen

    assert asyncio.run(scenario()) == list(range(1, 303))


# --- who may stream ----------------------------------------------------------------
def test_production_mode_without_credentials_is_a_json_401(production: Server) -> None:
    job = make_job()
    with production.stream(path(job)) as stream:
        assert stream.status == 401
        assert stream.headers["Content-Type"] == "application/json"
        assert stream.json() == {"error": "authentication required", "status": 401}


def test_the_operator_token_streams_any_workspace(production: Server) -> None:
    _, workspace, _ = signup("Ada Owner", "ada-operator@sse.test", "Ada Co")
    job = make_job(workspace)
    finish(job)
    with production.stream(path(job), operator()) as stream:
        assert ids(stream.events()) == [1, 2]


def test_a_bearer_session_streams_its_workspace_and_another_one_is_a_404(
    production: Server,
) -> None:
    _, workspace, token = signup("Bea Owner", "bea@sse.test", "Bea Co")
    _, _, other_token = signup("Cy Outsider", "cy@sse.test", "Cy Co")
    job = make_job(workspace)
    finish(job)
    with production.stream(path(job), bearer(token)) as stream:
        assert ids(stream.events()) == [1, 2]
    with production.stream(path(job), bearer(other_token)) as stream:
        assert stream.status == 404
        assert stream.json() == {"error": "job not found", "status": 404}


def test_the_console_session_cookie_streams(production: Server) -> None:
    user, workspace, _ = signup("Dee Owner", "dee@sse.test", "Dee Co")
    job = make_job(workspace)
    finish(job)
    with production.stream(path(job), {"Cookie": f"sessionid={console_session(user)}"}) as stream:
        assert ids(stream.events()) == [1, 2]


def console_session(user: User) -> str:
    """Sign ``user`` in to the console the way the login view does; the session key."""
    from importlib import import_module

    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore()
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session.save()
    return str(request.session.session_key)


# --- the original Python client --------------------------------------------------------
def test_the_original_python_clients_parsing_yields_the_event_dicts(local: Server) -> None:
    job = make_job()
    emit(job, 2)
    insert_unpublished(job, "multi\nline \u2028 \u0085 text")
    finish(job)
    headers = {"Accept": "application/json"}
    with local.stream(path(job), headers) as stream:
        assert stream.status == 200
        body = stream.response.read().decode("utf-8")
    # ``str.splitlines`` breaks at more characters than SSE does: each event survives it.
    assert list(python_client_events(iter(body.splitlines()))) == wire(job)
