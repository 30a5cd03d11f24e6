"""The web process's handler (matrixcloud/lib/lanes.py) under a real daphne.

Plain requests are served by a small pool of threads, and a tool call waits for its
host's reply on the event loop (a deferred response), so calls that hang hold no thread:
with two lane threads and six hanging calls the server still answers everything else,
and each hung call ends in the error shape with a body that matches its headers.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from tests.factories import signup
from tests.jobs.test_jobs_worker import worker_env
from tests.jobs.test_sse import Server, start_daphne
from tests.sandbox_processes import (
    Host,
    end_all_sessions,
    python_server,
    running_host,
    wait_step,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TINY = python_server("tiny_server.py")
LANE_THREADS = 2


@pytest.fixture(scope="module")
def live(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Host]]:
    database = {
        k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
    }
    server = start_daphne(
        {
            **database,
            "MATRIX_RUNTIME_RATE_LIMIT_RPM": "0",
            "MATRIX_RUNTIME_WEB_THREADS": str(LANE_THREADS),
        }
    )
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


def new_token() -> str:
    email = f"lane-{uuid.uuid4().hex[:8]}@lanes.test"
    return signup("Lane", email)[2]


def request(
    server: Server, method: str, path: str, token: str, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, data, headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def session(server: Server, token: str) -> str:
    status, _, body = request(
        server, "POST", "/v1/sandbox/sessions", token, {"start_command": TINY}
    )
    assert status == 202, body
    created = json.loads(body)
    wait_step(created["job_id"], "ready")
    return str(created["session_id"])


def call(server: Server, token: str, session_id: str, name: str, **arguments: Any) -> Any:
    path = f"/v1/sandbox/sessions/{session_id}/tools/call"
    status, headers, body = request(
        server, "POST", path, token, {"name": name, "arguments": arguments}
    )
    assert int(headers["Content-Length"]) == len(body)  # completed after the middleware
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def test_a_deferred_call_answers_with_its_result_and_its_failures_in_the_error_shape(
    server: Server,
) -> None:
    token = new_token()
    session_id = session(server, token)
    status, body = call(server, token, session_id, "echo", message="héllo")
    assert (status, body["ok"], body["result"]["content"][0]["text"]) == (200, True, "héllo")
    # The server never answers `hang`: the host times it out (1.5 s without progress).
    status, body = call(server, token, session_id, "hang")
    assert status == 409
    assert set(body) == {"error", "status"}
    assert body["status"] == 409
    assert "timed out" in body["error"] or "did not answer" in body["error"], body


def test_hanging_calls_hold_no_lane_thread(server: Server) -> None:
    token = new_token()
    session_id = session(server, token)
    results: list[tuple[int, Any]] = []
    done = threading.Event()

    def hang() -> None:
        results.append(call(server, token, session_id, "hang"))
        if len(results) == 6:
            done.set()

    callers = [threading.Thread(target=hang) for _ in range(3 * LANE_THREADS)]
    for caller in callers:
        caller.start()
    # While all six wait for the host (more than the lane has threads), the server
    # answers plain requests and other calls, and none of the hung calls has returned.
    for n in range(5):
        status, _, body = request(server, "GET", f"/v1/sandbox/sessions/{session_id}", token)
        assert status == 200, body
        assert call(server, token, session_id, "echo", message=f"m{n}")[0] == 200
    assert not done.is_set(), results
    for caller in callers:
        caller.join(timeout=20)
    assert [status for status, _ in results] == [409] * 6


def test_plain_requests_reuse_the_lanes_database_connections(server: Server) -> None:
    token = new_token()
    pid = server.proc.pid

    def open_files() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    for _ in range(10):
        assert request(server, "GET", "/v1/jobs", token)[0] == 200
    settled, sessions = open_files(), sessions_opened()
    for _ in range(60):
        assert request(server, "GET", "/v1/jobs", token)[0] == 200
    # Connections live in the lane's threads: none opened per request, none leaked.
    assert open_files() <= settled + 2
    if sessions is not None:  # PostgreSQL counts the sessions ever opened to the database
        assert sessions_opened() - sessions <= LANE_THREADS


def sessions_opened() -> int | None:
    """How many sessions PostgreSQL has seen opened on this database (None on SQLite).

    Backends report their counts at most once a second: wait that out first."""
    if connection.vendor != "postgresql":
        return None
    time.sleep(1.2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])
