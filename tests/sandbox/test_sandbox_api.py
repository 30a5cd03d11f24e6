"""/v1/sandbox/sessions without a host: validation at creation, the rows a session is,
tenancy, the 409s before a server is ready and after it ended, cancel, the session job
types on /v1/jobs, redaction, tools_changed wording, the admin. Real servers under a
real host are in ``test_sandbox_host`` and ``test_sandbox_http``."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent, User
from jobs.choices import JobKind, JobStatus
from jobs.models import Job, JobEvent
from jobs.services import job_claim, job_enqueue, job_finish
from sandbox.host.records import session_ready, tools_changed_event
from sandbox.models import SandboxSession, ToolCall, ToolFingerprint, command_key
from sandbox.services import redact, sandbox_create, stored_arguments
from tests import factories
from tests.factories import actor_of, bearer, error, issue

pytestmark = pytest.mark.django_db

cast = factories.cast
COMMAND = "node /opt/servers/everything/dist/index.js stdio"
SESSIONS = "/v1/sandbox/sessions"


def create(api: Any, token: str, **body: Any) -> Any:
    return api.post(SESSIONS, {"start_command": COMMAND, **body}, **bearer(token))


def make(workspace: Any, command: str = COMMAND, **kwargs: Any) -> SandboxSession:
    """A session created through the service (the API's own path)."""
    return sandbox_create(
        start_command=command, env=None, ttl_seconds=0, actor=actor_of(workspace), **kwargs
    )


def running(session: SandboxSession, *, ready: bool) -> SandboxSession:
    """Claim the session's job as a host would, and list tools if ``ready``."""
    job_claim(session.job_id, runner="specific.test!host")
    if ready:
        tools = [{"name": "echo", "description": "Echo"}]
        session_ready(session.pk, tools=tools, fingerprints={"echo": "f1"}, server={}, events=[])
    session.refresh_from_db()
    session.job.refresh_from_db()
    return session


# --- create --------------------------------------------------------------------------------


def test_create_answers_202_and_writes_the_job_the_session_and_the_audit(api, cast):
    token = issue(cast.member)
    response = create(api, token, ttl_seconds=120, env={"GITHUB_TOKEN": "${secret:gh}"})
    assert response.status_code == 202, response.content
    body = response.json()
    session = SandboxSession.objects.select_related("job").get(pk=body["session_id"])
    job = session.job
    assert body == {
        "session_id": session.pk,
        "job_id": job.pk,
        "status": "starting",
        "expires_at": job.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "events_url": f"/v1/sandbox/sessions/{session.pk}/events",
    }
    assert session.pk.startswith("sbx_")
    assert len(session.pk) == 22
    assert (job.type, job.kind, job.status, job.ttl_seconds) == (
        "mcp.test",
        "session",
        "queued",
        120,
    )
    assert session.argv == ["node", "/opt/servers/everything/dist/index.js", "stdio"]
    assert session.env == {"GITHUB_TOKEN": "${secret:gh}"}  # the reference, never a value
    assert (session.workspace, session.created_by) == (cast.workspace, cast.member)
    assert [(e.step, e.status) for e in JobEvent.objects.filter(job=job)] == [("queue", "queued")]
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"job.created", "sandbox.created"} <= actions


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"start_command": "node a.js | sh"}, "command contains forbidden shell metacharacter '|'"),
        ({"start_command": "bash -c x"}, 'program "bash" is not allowed'),
        ({"start_command": "  "}, "empty start command"),
        ({"env": {"API_KEY": "sk-live-123"}}, 'env "API_KEY" appears to contain a raw secret'),
        ({"env": {"LD_PRELOAD": "/x.so"}}, 'env "LD_PRELOAD" is reserved'),
        ({"ttl_seconds": -1}, "ttl_seconds must not be negative"),
        ({"ttl_seconds": 601}, "ttl_seconds 601 exceeds maximum 600"),
        ({"transport": "sse"}, 'unsupported transport "sse" (only stdio is supported)'),
        ({"allow_network": True}, "allow_network is refused"),
    ],
)
def test_create_refuses_policy_env_and_ttl_with_422_and_writes_nothing(api, cast, body, message):
    response = api.post(SESSIONS, {"start_command": COMMAND, **body}, **bearer(issue(cast.owner)))
    assert response.status_code == 422, response.content
    assert response.json()["error"].startswith(message)
    assert not Job.objects.exists()
    assert not SandboxSession.objects.exists()


def test_network_is_granted_where_the_installation_allows_it(api, cast, settings):
    settings.MATRIX_SANDBOX_ALLOW_NETWORK = True
    response = create(api, issue(cast.owner), allow_network=True)
    assert response.status_code == 202
    assert SandboxSession.objects.get(pk=response.json()["session_id"]).allow_network


def test_sandboxes_need_authentication(api, settings):
    settings.MATRIX_MODE = "cloud-worker"
    assert api.post(SESSIONS, {"start_command": COMMAND}).status_code == 401
    assert api.get(f"{SESSIONS}/sbx_0123456789abcdef01").status_code == 401


# --- session job types on /v1/jobs -------------------------------------------------------


def test_the_session_types_are_capabilities_and_session_kind(api):
    capabilities = api.get("/v1/capabilities").json()["capabilities"]
    assert {"mcp.test", "mcp.run", "tool.run"} <= set(capabilities)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"type": "mcp.test", "payload": {"start_command": "sudo node x.js"}},
            'payload.start_command: program "sudo" is not allowed',
        ),
        (
            {"type": "mcp.run", "payload": {"start_command": COMMAND, "env": {"MY_SECRET": "x"}}},
            'payload.env: env "MY_SECRET" appears to contain a raw secret value',
        ),
        (
            {"type": "tool.run", "payload": {"start_command": COMMAND}},
            "payload.tool: Field required",
        ),
        ({"type": "mcp.test", "payload": {}}, "payload.start_command: Field required"),
    ],
)
def test_session_job_payloads_are_checked_at_creation(api, cast, body, message):
    response = api.post("/v1/jobs", body, **bearer(issue(cast.owner)))
    assert response.status_code == 422, response.content
    assert response.json()["error"].startswith(message)


def test_a_session_job_created_on_jobs_is_a_session_kind_job(api, cast):
    body = {"type": "tool.run", "payload": {"start_command": COMMAND, "tool": "echo"}}
    response = api.post("/v1/jobs", body, **bearer(issue(cast.owner)))
    assert response.status_code == 202
    assert Job.objects.get(pk=response.json()["job_id"]).kind == JobKind.SESSION


def test_a_live_session_holds_no_batch_job_slot(cast, settings):
    from tests import job_handlers  # noqa: F401  (test.echo)

    settings.MATRIX_MAX_CONCURRENT_JOBS = settings.MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE = 1
    running(make(cast.workspace), ready=True)
    batch = job_enqueue(
        job_type="test.echo",
        payload={"message": "hi"},
        ttl_seconds=0,
        actor=actor_of(cast.workspace),
    )
    assert job_claim(batch.pk, runner="worker:test:1") is not None


# --- read, tools, call, delete ---------------------------------------------------------------


def test_get_is_the_jobs_status_and_result(api, cast):
    session = running(make(cast.workspace), ready=True)
    body = api.get(f"{SESSIONS}/{session.pk}", **bearer(issue(cast.owner))).json()
    assert {key: body[key] for key in ("session_id", "job_id", "status", "result")} == {
        "session_id": session.pk,
        "job_id": session.job_id,
        "status": "running",
        "result": {"tools": [{"name": "echo", "description": "Echo"}]},
    }
    assert (body["ready"], body["tools_count"], body["type"]) == (True, 1, "mcp.test")


def test_another_workspaces_session_is_404_everywhere(api, cast):
    session = running(make(cast.workspace), ready=True)
    outsider = bearer(issue(cast.outsider))
    base = f"{SESSIONS}/{session.pk}"
    not_found = error("sandbox session not found", 404)
    for response in (
        api.get(base, **outsider),
        api.delete(base, **outsider),
        api.get(f"{base}/events", **outsider),
        api.get(f"{base}/tools", **outsider),
        api.post(f"{base}/tools/call", {"name": "echo"}, **outsider),
        api.get(f"{SESSIONS}/sbx_nosuchsession000000", **bearer(issue(cast.owner))),
    ):
        assert (response.status_code, response.json()) == (404, not_found)
    assert Job.objects.get(pk=session.job_id).status == JobStatus.RUNNING
    assert not ToolCall.objects.exists()


def test_tools_and_calls_are_409_before_ready_and_the_refusal_is_recorded(api, cast):
    session = running(make(cast.workspace), ready=False)
    token = bearer(issue(cast.member))
    tools = api.get(f"{SESSIONS}/{session.pk}/tools", **token)
    assert (tools.status_code, tools.json()) == (409, error("sandbox not ready", 409))
    call = api.post(
        f"{SESSIONS}/{session.pk}/tools/call",
        {"name": "echo", "arguments": {"message": "hi", "api_key": "k"}},
        **token,
    )
    assert (call.status_code, call.json()) == (409, error("sandbox not ready", 409))
    record = ToolCall.objects.get()
    assert (record.outcome, record.tool, record.user, record.session_ref) == (
        "refused",
        "echo",
        cast.member,
        session.pk,
    )
    assert record.arguments == {"message": "hi", "api_key": "[redacted]"}
    assert AuditEvent.objects.filter(action="sandbox.tool_call", status="failure").count() == 1


def test_tools_and_calls_are_409_after_the_end_saying_how_it_ended(api, cast):
    session = running(make(cast.workspace), ready=True)
    job_finish(session.job_id, JobStatus.EXPIRED)
    token = bearer(issue(cast.owner))
    ended = error("sandbox session has ended (expired)", 409)
    tools = api.get(f"{SESSIONS}/{session.pk}/tools", **token)
    call = api.post(f"{SESSIONS}/{session.pk}/tools/call", {"name": "echo"}, **token)
    assert (tools.status_code, tools.json()) == (409, ended)
    assert (call.status_code, call.json()) == (409, ended)
    body = api.get(f"{SESSIONS}/{session.pk}", **token).json()
    assert body["status"] == "expired"
    assert body["result"] == {"tools": [{"name": "echo", "description": "Echo"}]}


def test_a_call_needs_a_tool_name(api, cast):
    session = running(make(cast.workspace), ready=True)
    response = api.post(
        f"{SESSIONS}/{session.pk}/tools/call", {"name": " "}, **bearer(issue(cast.owner))
    )
    assert (response.status_code, response.json()) == (400, error("tool name is required", 400))


def test_a_host_that_stopped_heart_beating_is_not_asked(api, cast):
    session = running(make(cast.workspace), ready=True)
    Job.objects.filter(pk=session.job_id).update(
        heartbeat_at=timezone.now() - timezone.timedelta(seconds=30)
    )
    response = api.post(
        f"{SESSIONS}/{session.pk}/tools/call", {"name": "echo"}, **bearer(issue(cast.owner))
    )
    assert response.status_code == 409
    assert response.json()["error"].startswith("the sandbox host stopped answering")


def test_a_host_that_never_answers_is_a_409_timeout_and_recorded(api, cast, settings, monkeypatch):
    from sandbox import rpc

    settings.MATRIX_SANDBOX_CALL_HARD_CAP = 0.1
    monkeypatch.setattr(rpc, "REPLY_MARGIN", 0.2)
    session = running(make(cast.workspace), ready=True)  # its runner is no real host
    response = api.post(
        f"{SESSIONS}/{session.pk}/tools/call", {"name": "echo"}, **bearer(issue(cast.owner))
    )
    assert (response.status_code, response.json()) == (
        409,
        error("the sandbox host did not answer within 0.3 s", 409),
    )
    assert ToolCall.objects.get().outcome == "timeout"


def test_without_a_bus_a_call_is_a_503(api, cast, settings):
    settings.REDIS_URL = ""
    session = running(make(cast.workspace), ready=True)
    response = api.post(
        f"{SESSIONS}/{session.pk}/tools/call", {"name": "echo"}, **bearer(issue(cast.owner))
    )
    assert response.status_code == 503
    assert response.json()["error"].startswith("the bus is unavailable: REDIS_URL is unset")
    assert ToolCall.objects.get().outcome == "refused"


def test_deleting_a_queued_session_cancels_it_and_keeps_the_record(api, cast):
    session = make(cast.workspace)
    token = bearer(issue(cast.owner))
    response = api.delete(f"{SESSIONS}/{session.pk}", **token)
    assert (response.status_code, response.json()) == (200, {"ok": True, "status": "cancelled"})
    assert api.get(f"{SESSIONS}/{session.pk}", **token).json()["status"] == "cancelled"
    again = api.delete(f"{SESSIONS}/{session.pk}", **token)
    assert again.json() == {"ok": True, "status": "cancelled"}


def test_wrong_methods_are_405(api, cast):
    session = make(cast.workspace)
    token = bearer(issue(cast.owner))
    assert api.put(f"{SESSIONS}/{session.pk}", {}, **token).status_code == 405
    assert api.get(f"{SESSIONS}/{session.pk}/tools/call", **token).status_code == 405
    assert api.delete(SESSIONS, **token).status_code == 405


# --- redaction and fingerprints ----------------------------------------------------------------


def test_arguments_are_redacted_by_key_at_any_depth_and_bounded():
    arguments = {
        "query": "weather",
        "auth": {"access_token": "t", "nested": [{"password": "p", "user": "u"}]},
        "ApiKey": "k",
    }
    assert redact(arguments) == {
        "query": "weather",
        "auth": {"access_token": "[redacted]", "nested": [{"password": "[redacted]", "user": "u"}]},
        "ApiKey": "[redacted]",
    }
    big = stored_arguments({"blob": "x" * 100_000})
    assert big["_truncated"] is True
    assert big["keys"] == ["blob"]


def test_tools_changed_names_what_was_added_removed_and_changed():
    event = tools_changed_event({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert event is not None
    step, status, message, data = event
    assert (step, status) == ("tools_changed", "ok")
    assert message == (
        "Tools differ from what this command advertised before: "
        "1 added (d); 1 removed (c); 1 changed (b)"
    )
    assert data == {"added": ["d"], "removed": ["c"], "changed": ["b"]}
    assert tools_changed_event({"a": "1"}, {"a": "1"}) is None


def test_fingerprints_are_per_workspace_and_command(cast):
    first = running(make(cast.workspace), ready=True)
    row = ToolFingerprint.objects.get()
    assert (row.workspace, row.command_key) == (cast.workspace, command_key(first.argv))
    assert row.fingerprints == {"echo": "f1"}
    assert not JobEvent.objects.filter(step="tools_changed").exists()  # nothing to compare


# --- admin ----------------------------------------------------------------------------------


@pytest.fixture
def operator_client(client):
    operator = User.objects.create_superuser(email="op@example.com", password="op-password-1")
    client.force_login(operator)
    return client


def test_sandbox_admin_pages_load_and_stop_goes_through_the_service(operator_client, cast):
    session = make(cast.workspace)
    for url in (
        reverse("admin:sandbox_sandboxsession_changelist"),
        reverse("admin:sandbox_sandboxsession_change", args=[quote(session.pk)]),
        reverse("admin:sandbox_toolcall_changelist"),
        reverse("admin:sandbox_toolfingerprint_changelist"),
    ):
        assert operator_client.get(url).status_code == 200
    response = operator_client.post(
        reverse("admin:sandbox_sandboxsession_changelist"),
        {"action": "stop", "_selected_action": [session.pk]},
        follow=True,
    )
    assert b"Stopped 1 queued session(s)" in response.content
    assert Job.objects.get(pk=session.job_id).status == JobStatus.CANCELLED
