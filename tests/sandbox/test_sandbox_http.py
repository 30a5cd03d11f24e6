"""Sandboxes over real HTTP: a daphne and a sandbox host on the test database and bus.

The original Python client's sandbox calls (docs/COMPATIBILITY.md#c-15: ``create_sandbox``,
``get_sandbox``, ``sandbox_tools``, ``call_sandbox_tool``, ``delete_sandbox``,
``stream_sandbox_events``) and its CLI's ``mxc sandbox start`` loop (print each event's
step and message until ``ready``, an error or an expiry) run against the live server;
the SSE stream carries the original's events (C-09) in order and closes after the terminal
one; another workspace's session is a 404 on every route, the stream included.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.models import ToolCall
from tests.factories import PASSWORD
from tests.jobs.test_jobs_worker import wait_for, worker_env
from tests.jobs.test_sse import Server, start_daphne
from tests.sandbox_processes import Host, end_all_sessions, python_server, running_host
from tests.sse_client import Stream, python_client_events
from tests.system.test_client_compat import MatrixCloudError, OriginalClient

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STREAM_TIMEOUT = 30  # the original client's read timeout


class SandboxClient(OriginalClient):
    """The original client's sandbox methods, sending and reading exactly what it does."""

    def __init__(self, server: Server, token: str | None = None) -> None:
        super().__init__(f"http://127.0.0.1:{server.port}", token)
        self.server = server

    def create_sandbox(
        self,
        entity_id: str,
        start_command: str,
        runtime: str = "node",
        transport: str = "stdio",
        ttl_seconds: int = 600,
    ) -> Any:
        body = {
            "entity_id": entity_id,
            "start_command": start_command,
            "runtime": runtime,
            "transport": transport,
            "ttl_seconds": ttl_seconds,
        }
        return self._request("POST", "/v1/sandbox/sessions", body)

    def get_sandbox(self, session_id: str) -> Any:
        return self._request("GET", f"/v1/sandbox/sessions/{session_id}")

    def sandbox_tools(self, session_id: str) -> Any:
        return self._request("GET", f"/v1/sandbox/sessions/{session_id}/tools").get("tools", [])

    def call_sandbox_tool(self, session_id: str, name: str, arguments: Any = None) -> Any:
        body = {"name": name, "arguments": arguments or {}}
        return self._request("POST", f"/v1/sandbox/sessions/{session_id}/tools/call", body)

    def delete_sandbox(self, session_id: str) -> Any:
        return self._request("DELETE", f"/v1/sandbox/sessions/{session_id}")

    def stream_sandbox_events(self, session_id: str) -> Iterator[dict[str, Any]]:
        """GET the stream with the client's headers; data lines only, as it parses them."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        path = f"/v1/sandbox/sessions/{urllib.parse.quote(session_id)}/events"
        stream = Stream(self.server.port, path, headers, timeout=STREAM_TIMEOUT)
        try:
            if stream.status >= 400:
                raise MatrixCloudError(f"stream {path}: HTTP {stream.status}")
            yield from python_client_events(stream.lines())
        finally:
            stream.close()


def cli_sandbox_start(client: SandboxClient, entity_id: str, command: str) -> list[str]:
    """``mxc sandbox start ENTITY --cmd CMD``: create, then print events until ready."""
    created = client.create_sandbox(entity_id, command)
    printed = [f"session {created['session_id']} job {created.get('job_id')}"]
    try:
        for event in client.stream_sandbox_events(created["session_id"]):
            printed.append(f"{event['step']}: {event['message']}")
            if event["step"] == "ready" or event.get("status") in ("error", "expired"):
                break
    except MatrixCloudError:
        pass
    return printed


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


def test_the_original_clients_sandbox_calls_and_cli_loop(server: Server) -> None:
    client = SandboxClient(server)
    printed = cli_sandbox_start(client, "entity-1", python_server("tiny_server.py"))
    session_id = printed[0].split()[1]
    assert printed[1:] == [
        "queue: Job queued",
        "start: Job started",  # who runs it (a host channel) is not the user's business
        "validate: Command accepted",
        "sandbox: Creating temporary sandbox",
        "mcp_start: Starting MCP server",
        "mcp_initialize: MCP initialize succeeded",
        "tools_list: Found 3 tools",
        "ready: Sandbox ready",
    ]
    sent = json.loads(client.sent[0].data)
    assert sent == {
        "entity_id": "entity-1",
        "start_command": python_server("tiny_server.py"),
        "runtime": "node",
        "transport": "stdio",
        "ttl_seconds": 600,
    }

    snapshot = client.get_sandbox(session_id)
    assert snapshot["status"] == "running"
    tools = client.sandbox_tools(session_id)
    assert [tool["name"] for tool in tools] == ["echo", "progress", "hang"]
    assert tools[0]["description"] == "Echo the message back."
    answer = client.call_sandbox_tool(session_id, "echo", {"message": "over http"})
    assert answer == {
        "ok": True,
        "result": {"content": [{"type": "text", "text": "over http"}], "isError": False},
    }
    assert client.delete_sandbox(session_id) == {"ok": True, "status": "cancelled"}
    with pytest.raises(MatrixCloudError) as ended:
        client.sandbox_tools(session_id)
    assert (ended.value.status, str(ended.value)) == (409, "sandbox session has ended (cancelled)")
    assert wait_for(lambda: ToolCall.objects.filter(outcome="ok").count(), 5, "the call row") == 1


def test_the_event_stream_replays_follows_and_closes_after_the_terminal_event(
    server: Server,
) -> None:
    client = SandboxClient(server)
    created = client.create_sandbox("e", python_server("tiny_server.py"), ttl_seconds=3)
    with Stream(server.port, f"/v1/sandbox/sessions/{created['session_id']}/events") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        blocks = stream.events()  # to the end: the stream closes after the terminal event
    seen = [block.data for block in blocks]
    assert None not in seen
    assert not [line for block in blocks for line in block.lines if line.startswith("event:")]
    assert [block.id for block in blocks] == list(range(1, len(blocks) + 1))
    order = [event["step"] for event in seen if event and event["step"] != "log"]
    assert order == [
        "queue", "start", "validate", "sandbox", "mcp_start", "mcp_initialize", "tools_list",
        "ready", "expire",
    ]  # fmt: skip
    assert seen[-1] == {
        "step": "expire",
        "status": "expired",
        "message": "Job expired after 3 seconds",
    }
    late = list(client.stream_sandbox_events(created["session_id"]))
    assert late == seen  # a late subscriber gets the whole history, then EOF


def test_another_workspaces_session_is_404_over_http_too(server: Server) -> None:
    alice = SandboxClient(server)
    alice.signup("Alice", "alice@sandbox.test", PASSWORD)
    bob = SandboxClient(server)
    bob.signup("Bob", "bob@sandbox.test", PASSWORD)
    session_id = alice.create_sandbox("a", python_server("tiny_server.py"))["session_id"]
    for attempt in (
        lambda: bob.get_sandbox(session_id),
        lambda: bob.sandbox_tools(session_id),
        lambda: bob.call_sandbox_tool(session_id, "echo", {"message": "x"}),
        lambda: bob.delete_sandbox(session_id),
    ):
        with pytest.raises(MatrixCloudError) as refused:
            attempt()
        assert (refused.value.status, str(refused.value)) == (404, "sandbox session not found")
    with pytest.raises(MatrixCloudError) as stream:
        next(bob.stream_sandbox_events(session_id))
    assert str(stream.value) == f"stream /v1/sandbox/sessions/{session_id}/events: HTTP 404"
    assert alice.get_sandbox(session_id)["session_id"] == session_id


def test_the_host_log_has_no_tracebacks(live: tuple[Server, Host]) -> None:
    assert "Traceback" not in live[1].output(), live[1].output()[-4000:]
