"""The tool call's fast route (sandbox/api/fastcall.py) under a real daphne and host.

Repeated calls of one caller on one session are answered from what Django's path left
behind; the tests check that such an answer is the one Django gives, and that each
cached fact stops counting the moment it stops being true: a token revoked (in this
process or through the API), a user deactivated, a session stopped, a request from
another workspace, a cookie caller, and input the guard or the serializer refuses.
The web process logs each call it answers on the fast route (at DEBUG), which is how
these tests know a call took it.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.models import SessionToken, User
from accounts.services.sessions import session_revoke
from matrixcloud.lib.tokens import secret_hash
from tests.factories import signup
from tests.jobs.test_jobs_worker import worker_env
from tests.jobs.test_sse import DROPPED, REPO, Server
from tests.sandbox_processes import Host, end_all_sessions, python_server, running_host, wait_step

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TINY = python_server("tiny_server.py")
FAST = "answered by the fast route"
LIMITED = "rate limit exceeded — slow down and retry"
CALLS_PER_MINUTE = 12  # the web process's tool-call budget per credential


@pytest.fixture(scope="module")
def live(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path, Host]]:
    logs = tmp_path_factory.mktemp("fastcall")
    database = {
        k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
    }
    env = {key: value for key, value in os.environ.items() if key not in DROPPED}
    env.update(
        database,
        MATRIX_RUNTIME_RATE_LIMIT_RPM="100000",
        MATRIX_RUNTIME_TOOL_CALL_RATE_LIMIT_RPM=str(CALLS_PER_MINUTE),
        MATRIX_RUNTIME_MODE="customer-agent",
        MATRIX_RUNTIME_API_TOKEN="fastcall-operator-token-" + uuid.uuid4().hex,
        MATRIX_RUNTIME_LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="matrixcloud.settings",
    )
    from matrixcloud.lib.bus import free_port

    port = free_port()
    web_log = logs / "web.log"
    with web_log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0",
             "matrixcloud.asgi:application"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = Server(port, proc)
    try:
        server.wait_ready()
        with running_host(logs / "host.log") as host:
            yield server, web_log, host
    finally:
        server.stop()


@pytest.fixture
def server(live: tuple[Server, Path, Host]) -> Iterator[tuple[Server, Path]]:
    yield live[0], live[1]
    end_all_sessions()


def fast_answers(log: Path, session_id: str) -> int:
    return sum(1 for line in log.read_text().splitlines() if FAST in line and session_id in line)


def request(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        sent = dict(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, data, sent)
        response = conn.getresponse()
        payload = response.read()
        answer = json.loads(payload) if payload else None
        return response.status, dict(response.getheaders()), answer
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user() -> tuple[User, str]:
    user, _, token = signup("Fast", f"fast-{uuid.uuid4().hex[:8]}@fast.test")
    return user, token


def new_session(server: Server, token: str) -> str:
    status, _, body = request(
        server, "POST", "/v1/sandbox/sessions", {"start_command": TINY}, bearer(token)
    )
    assert status == 202, body
    wait_step(body["job_id"], "ready")
    return str(body["session_id"])


def call(
    server: Server, token: str, session_id: str, message: str = "hi", **extra: Any
) -> tuple[int, dict[str, str], Any]:
    body = {"name": "echo", "arguments": {"message": message}}
    return request(
        server, "POST", f"/v1/sandbox/sessions/{session_id}/tools/call", body,
        {**bearer(token), **extra},
    )  # fmt: skip


def warm(server: Server, log: Path, token: str, session_id: str) -> None:
    """Calls until one is answered on the fast route (the first is Django's)."""
    before = fast_answers(log, session_id)
    for n in range(3):
        status, _, body = call(server, token, session_id, f"warm{n}")
        assert (status, body["result"]["content"][0]["text"]) == (200, f"warm{n}")
    assert fast_answers(log, session_id) >= before + 2


def test_repeated_calls_take_the_fast_route_and_answer_as_django_does(
    server: tuple[Server, Path],
) -> None:
    web, log = server
    _, token = new_user()
    session_id = new_session(web, token)
    status, django_headers, django_body = call(web, token, session_id, "héllo")
    assert fast_answers(log, session_id) == 0  # the first call: Django's path
    status_fast, fast_headers, fast_body = call(web, token, session_id, "héllo")
    assert fast_answers(log, session_id) == 1
    assert (status, status_fast) == (200, 200)
    assert fast_body == django_body
    assert fast_body["result"]["content"][0]["text"] == "héllo"
    # The same headers (the middleware's security headers included), bar the server's own.
    skip = {"Date", "Server"}
    assert {k: v for k, v in fast_headers.items() if k not in skip} == {
        k: v for k, v in django_headers.items() if k not in skip
    }
    # A failure in the error shape: the server never answers `hang`, the host times it
    # out (1.5 s without progress) and the fast route answers the 409.
    before = fast_answers(log, session_id)
    status, _, body = request(
        web, "POST", f"/v1/sandbox/sessions/{session_id}/tools/call", {"name": "hang"},
        bearer(token),
    )  # fmt: skip
    assert status == 409, body
    assert set(body) == {"error", "status"}, body
    assert "timed out" in body["error"] or "did not answer" in body["error"], body
    assert fast_answers(log, session_id) == before + 1


def test_a_revoked_token_is_refused_at_once_though_the_process_cached_it(
    server: tuple[Server, Path],
) -> None:
    web, log = server
    _, token = new_user()
    session_id = new_session(web, token)
    warm(web, log, token, session_id)
    # Revoked by a service in another process (this one), not through the web process.
    session_revoke(session=SessionToken.objects.get(token_hash=secret_hash(token)))
    status, _, body = call(web, token, session_id)
    assert (status, body) == (401, {"error": "missing or invalid bearer token", "status": 401})
    # And through the API's logout.
    _, token = new_user()
    session_id = new_session(web, token)
    warm(web, log, token, session_id)
    assert request(web, "POST", "/v1/auth/logout", None, bearer(token))[0] == 200
    assert call(web, token, session_id)[0] == 401


def test_a_deactivated_user_is_refused_at_once(server: tuple[Server, Path]) -> None:
    web, log = server
    user, token = new_user()
    session_id = new_session(web, token)
    warm(web, log, token, session_id)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert call(web, token, session_id)[0] == 401


def test_another_workspace_never_reaches_a_cached_session(server: tuple[Server, Path]) -> None:
    web, log = server
    _, token = new_user()
    _, stranger = new_user()
    session_id = new_session(web, token)
    warm(web, log, token, session_id)
    other_session = new_session(web, stranger)
    warm(web, log, stranger, other_session)  # the stranger is a cached caller too
    status, _, body = call(web, stranger, session_id)
    assert (status, body) == (404, {"error": "sandbox session not found", "status": 404})


def test_a_stopped_session_answers_that_it_ended(server: tuple[Server, Path]) -> None:
    web, log = server
    _, token = new_user()
    session_id = new_session(web, token)
    warm(web, log, token, session_id)
    path = f"/v1/sandbox/sessions/{session_id}"
    status, _, body = request(web, "DELETE", path, None, bearer(token))
    assert status == 200, body
    status, _, body = call(web, token, session_id)
    assert status == 409, body
    assert "cancelled" in body["error"] or "ended" in body["error"], body


def test_refused_input_gets_django_s_answer_on_a_cached_caller(
    server: tuple[Server, Path],
) -> None:
    web, log = server
    _, token = new_user()
    session_id = new_session(web, token)
    warm(web, log, token, session_id)
    path = f"/v1/sandbox/sessions/{session_id}/tools/call"
    answers = {
        "no name": request(web, "POST", path, {"arguments": {}}, bearer(token)),
        "blank name": request(web, "POST", path, {"name": "  "}, bearer(token)),
        "arguments not an object": request(
            web, "POST", path, {"name": "echo", "arguments": [1]}, bearer(token)
        ),
        "not JSON": request(web, "POST", path, None, bearer(token), raw=b"{nope"),
        "a NUL": request(web, "POST", path, None, bearer(token), raw=b'{"name":"e\\u0000"}'),
        "form body": request(
            web, "POST", path, None,
            {**bearer(token), "Content-Type": "application/x-www-form-urlencoded"}, raw=b"a=b",
        ),
        "foreign origin": call(web, token, session_id, Origin="https://evil.example"),
        "foreign host": call(web, token, session_id, Host="evil.example"),
    }  # fmt: skip
    statuses = {what: status for what, (status, _, _) in answers.items()}
    assert statuses == {
        "no name": 400,
        "blank name": 400,
        "arguments not an object": 400,
        "not JSON": 400,
        "a NUL": 400,
        "form body": 415,
        "foreign origin": 403,
        "foreign host": 400,
    }
    for what, (_, _, body) in answers.items():
        assert set(body) == {"error", "status"}, (what, body)
    assert answers["blank name"][2]["error"] == "tool name is required"


def test_a_cookie_caller_is_never_served_from_the_cache(server: tuple[Server, Path]) -> None:
    web, log = server
    _, token = new_user()
    session_id = new_session(web, token)
    before = fast_answers(log, session_id)
    # A cookie and no bearer token: the console's caller, whose writes are CSRF-checked.
    for _ in range(3):
        status, _, body = request(
            web, "POST", f"/v1/sandbox/sessions/{session_id}/tools/call",
            {"name": "echo", "arguments": {"message": "x"}}, {"Cookie": "sessionid=forged"},
        )  # fmt: skip
        assert status in (401, 403), body
    assert fast_answers(log, session_id) == before


def test_the_tool_call_budget_holds_on_the_fast_route(server: tuple[Server, Path]) -> None:
    """The fast route counts each call on the caller's tool-call budget, on the bus in
    the send's round trip: the call past it is Django's 429, and nothing is sent."""
    web, log = server
    _, token = new_user()
    session_id = new_session(web, token)  # a write: it proves the token to the limiter
    into_minute = time.time() % 60
    if into_minute > 45:  # all the calls in one fixed window (bounded wait)
        time.sleep(61 - into_minute)
    warm(web, log, token, session_id)  # 3 calls, the last two on the fast route
    fast_before = fast_answers(log, session_id)
    answers = [call(web, token, session_id, f"n{n}")[0] for n in range(CALLS_PER_MINUTE - 3)]
    assert answers == [200] * (CALLS_PER_MINUTE - 3)
    assert fast_answers(log, session_id) == fast_before + CALLS_PER_MINUTE - 3
    status, headers, body = call(web, token, session_id, "one too many")
    assert (status, body) == (429, {"error": LIMITED, "status": 429})
    assert 1 <= int(headers["Retry-After"]) <= 61
    assert fast_answers(log, session_id) == fast_before + CALLS_PER_MINUTE - 3
    # Reads are never limited.
    assert request(web, "GET", f"/v1/sandbox/sessions/{session_id}", None, bearer(token))[0] == 200
