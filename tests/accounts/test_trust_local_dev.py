"""Local-dev anonymous access is the Owner of the local workspace, nothing more,
attacked for real: a local-dev daphne with no operator token, called
from loopback with no token, and a second daphne with the operator token, both on the
test database.

The attacks: the anonymous loopback caller names another workspace with
``X-Matrix-Workspace`` and reads its audit log, members, providers, usage, jobs,
runtimes and sandboxes, mints a join token there, rotates or revokes its runtime's
token. Each is refused and returns none of that workspace's data; the other
workspace's runtime still heart-beats with its token. The anonymous caller still runs
the original's smoke flow, and the operator token keeps its cross-workspace power.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from accounts.models import AuditEvent, Workspace
from accounts.services import local_workspace
from accounts.services.providers import provider_upsert
from jobs.models import Job
from matrixcloud.api.permissions import SESSION_REQUIRED
from runtimes.models import JoinToken, Runtime
from runtimes.services import join_token_issue
from sandbox.models import SandboxSession
from sandbox.services import sandbox_create
from tests.factories import actor_of, error, signup
from tests.jobs.test_jobs_worker import worker_env
from tests.jobs.test_sse import Server, start_daphne
from tests.sandbox_processes import end_all_sessions, python_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OPERATOR_TOKEN = "operator-token-for-trust-tests-0123456789abcdef"
VICTIM_KEY = "sk-victim-only-9f8e7d6c5b4a"
SMOKE_JOB = {
    "type": "mcp.test",
    "ttl_seconds": 120,
    "payload": {
        "runtime": "node",
        "transport": "stdio",
        "start_command": "npx -y @modelcontextprotocol/server-filesystem /tmp",
    },
}


@dataclass(frozen=True)
class Victim:
    """Another workspace with something of everything, and its runtime's token."""

    workspace: Workspace
    owner_token: str
    runtime_id: str
    runtime_token: str
    job_id: str
    session_id: str
    credential_id: str

    def ids(self) -> tuple[str, ...]:
        return (self.workspace.pk, self.runtime_id, self.job_id, self.session_id,
                self.credential_id)  # fmt: skip


def call(
    server: Server, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any, bytes]:
    """One request over real loopback HTTP: (status, JSON or None, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    data = None if body is None else json.dumps(body).encode()
    sent = {"Accept": "application/json", **headers}
    if data is not None:
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw), raw
    except ValueError:
        return response.status, None, raw


@pytest.fixture(scope="module")
def servers(django_db_setup: None) -> Iterator[tuple[Server, Server]]:
    """(local-dev with no operator token, local-dev with the operator token)."""
    database = {
        k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
    }
    common = {**database, "MATRIX_RUNTIME_RATE_LIMIT_RPM": "0"}
    anonymous = start_daphne(common)
    operator = start_daphne({**common, "MATRIX_RUNTIME_API_TOKEN": OPERATOR_TOKEN})
    try:
        anonymous.wait_ready()
        operator.wait_ready()
        yield anonymous, operator
    finally:
        anonymous.stop()
        operator.stop()


@pytest.fixture
def local(servers: tuple[Server, Server]) -> Iterator[Server]:
    yield servers[0]
    end_all_sessions()


@pytest.fixture
def operated(servers: tuple[Server, Server]) -> Iterator[Server]:
    yield servers[1]
    end_all_sessions()


@pytest.fixture
def victim(local: Server) -> Victim:
    owner, workspace, token = signup("Gina Globex", "gina@globex.test", "Globex")
    minted = join_token_issue(label="gpu", actor=actor_of(workspace, owner))
    status, body, _ = call(local, "POST", "/v1/cloud/runtimes/register",
                           {"join_token": minted.secret, "name": "gpu-box"})  # fmt: skip
    assert status == 201, body
    session = sandbox_create(
        start_command=python_server("tiny_server.py"),
        env={},
        ttl_seconds=60,
        actor=actor_of(workspace, owner),
    )
    credential = provider_upsert(
        provider="openai", secret=VICTIM_KEY, actor=actor_of(workspace, name=str(owner.pk))
    )
    return Victim(
        workspace=workspace,
        owner_token=token,
        runtime_id=body["runtime"]["id"],
        runtime_token=body["runtime_token"],
        job_id=session.job_id,
        session_id=session.pk,
        credential_id=credential.pk,
    )


def assert_nothing_of(victim: Victim, raw: bytes) -> None:
    text = raw.decode(errors="replace")
    for identifier in (*victim.ids(), VICTIM_KEY, "gina@globex.test"):
        assert identifier not in text


# The workspace endpoints: 401 for the anonymous caller, with the header or without.
WORKSPACE_READS = [
    "/v1/cloud/audit",
    "/v1/cloud/usage",
    "/v1/cloud/providers",
    "/v1/cloud/runtimes",
    "/v1/cloud/join-tokens?all=true",
    "/v1/auth/members",
    "/v1/auth/invitations",
    "/v1/model-profiles",
    "/v1/model-installations",
]


def test_anonymous_reads_of_another_workspace_are_refused(local: Server, victim: Victim) -> None:
    named = {"X-Matrix-Workspace": victim.workspace.slug}
    for path in WORKSPACE_READS:
        for headers in (named, {"X-Matrix-Workspace": victim.workspace.pk}, {}):
            status, body, raw = call(local, "GET", path, **headers)
            assert (status, body) == (401, error(SESSION_REQUIRED, 401)), path
            assert_nothing_of(victim, raw)
    # Where it may act (jobs, sandboxes), naming another workspace is a 404 that says
    # why, the same for a workspace that exists and one that does not.
    for path in (
        "/v1/jobs",
        f"/v1/jobs/{victim.job_id}",
        f"/v1/sandbox/sessions/{victim.session_id}",
    ):
        for wanted in (victim.workspace.slug, "no-such-workspace"):
            status, body, raw = call(local, "GET", path, **{"X-Matrix-Workspace": wanted})
            assert status == 404, (path, body)
            assert body == error(
                f"no workspace {wanted!r} for this caller: anonymous local-dev access acts "
                "in the 'local' workspace only (other workspaces need a session or the "
                "operator token)",
                404,
            )
            assert_nothing_of(victim, raw)


def test_anonymous_lists_and_reads_stay_in_the_local_workspace(
    local: Server, victim: Victim
) -> None:
    status, created, _ = call(local, "POST", "/v1/jobs", SMOKE_JOB)
    assert status == 202
    status, listed, raw = call(local, "GET", "/v1/jobs")
    assert status == 200
    assert [job["job_id"] for job in listed["jobs"]] == [created["job_id"]]
    assert_nothing_of(victim, raw)
    for method, path in [
        ("GET", f"/v1/jobs/{victim.job_id}"),
        ("GET", f"/v1/jobs/{victim.job_id}/events"),
        ("DELETE", f"/v1/jobs/{victim.job_id}"),
        ("GET", f"/v1/sandbox/sessions/{victim.session_id}"),
        ("GET", f"/v1/sandbox/sessions/{victim.session_id}/events"),
        ("DELETE", f"/v1/sandbox/sessions/{victim.session_id}"),
    ]:
        status, _, raw = call(local, method, path)
        assert status == 404, (method, path)
        assert_nothing_of(victim, raw)
    assert Job.objects.get(pk=victim.job_id).status in ("queued", "running")


def test_anonymous_caller_mints_and_rotates_nothing(local: Server, victim: Victim) -> None:
    tokens = JoinToken.objects.count()
    runtime = Runtime.objects.get(pk=victim.runtime_id)
    named = {"X-Matrix-Workspace": victim.workspace.slug}
    attempts = [
        ("POST", "/v1/cloud/join-tokens", {"label": "evil", "max_uses": 5}),
        ("POST", f"/v1/cloud/runtimes/{victim.runtime_id}/token/rotate", {}),
        ("POST", f"/v1/cloud/runtimes/{victim.runtime_id}/token/revoke", {}),
        ("DELETE", f"/v1/cloud/runtimes/{victim.runtime_id}", None),
        ("POST", "/v1/cloud/providers", {"provider": "openai", "secret": "sk-evil-0123456789"}),
    ]
    for method, path, body in attempts:
        for headers in (named, {}):
            status, answer, raw = call(local, method, path, body, **headers)
            assert (status, answer) == (401, error(SESSION_REQUIRED, 401)), path
            assert_nothing_of(victim, raw)
    assert JoinToken.objects.count() == tokens
    after = Runtime.objects.get(pk=victim.runtime_id)
    assert (after.token_hash, after.token_revoked_at) == (runtime.token_hash, None)
    beat = {"status": "online", "caps": []}
    status, body, _ = call(local, "POST", "/v1/cloud/runtimes/heartbeat", beat,
                           Authorization=f"Bearer {victim.runtime_token}")  # fmt: skip
    assert status == 200, body


def test_anonymous_caller_runs_the_original_smoke_flow(local: Server) -> None:
    """The original's scripts/smoke-test.sh (docs/COMPATIBILITY.md#c-15), minus waiting
    for a host: health, capabilities, an mcp.test job found by a regex on compact JSON,
    its snapshot, its cancel, a model.inspect job; audited as local-dev in the local
    workspace."""
    assert call(local, "GET", "/v1/health")[0] == 200
    assert call(local, "GET", "/v1/capabilities")[0] == 200
    status, created, raw = call(local, "POST", "/v1/jobs", SMOKE_JOB)
    assert status == 202
    assert b'"job_id":"job_' in raw  # the smoke script's regexes need compact JSON
    assert b'"status":"' in raw
    job_id = created["job_id"]
    status, snapshot, _ = call(local, "GET", f"/v1/jobs/{job_id}")
    assert (status, snapshot["job_id"]) == (200, job_id)
    status, cancelled, _ = call(local, "DELETE", f"/v1/jobs/{job_id}")
    assert status == 200, cancelled
    inspect = {"type": "model.inspect", "ttl_seconds": 60,
               "payload": {"model": "hf:Qwen/Qwen2.5-7B-Instruct", "revision": "main"}}  # fmt: skip
    assert call(local, "POST", "/v1/jobs", inspect)[0] == 202
    for path in ("/v1/runtimes", "/v1/catalog", "/v1/policies", "/v1/system/storage",
                 "/v1/matrixshell/status"):  # fmt: skip
        status, body, _ = call(local, "GET", path)
        assert status in (200, 403), (path, body)  # 403: MatrixShell disabled here
    records = AuditEvent.objects.filter(action="job.created")
    assert {(r.actor, r.workspace_id) for r in records} == {("local-dev", local_workspace().pk)}


def test_a_workspace_signed_up_as_local_is_never_the_local_workspace(local: Server) -> None:
    """Otherwise the anonymous caller would be the Owner of someone's workspace."""
    _, workspace, _ = signup("Lou Local", "lou@local.test", "Local")
    assert workspace.slug != "local"
    assert call(local, "POST", "/v1/jobs", SMOKE_JOB)[0] == 202
    assert not Job.objects.filter(workspace=workspace).exists()


def test_the_operator_token_keeps_cross_workspace_power(operated: Server, victim: Victim) -> None:
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    named = {**operator, "X-Matrix-Workspace": victim.workspace.slug}
    assert call(operated, "GET", "/v1/jobs")[0] == 401  # no anonymous access beside a token
    status, listed, _ = call(operated, "GET", "/v1/jobs", **operator)
    assert victim.job_id in {job["job_id"] for job in listed["jobs"]}  # every workspace
    status, audit, _ = call(operated, "GET", "/v1/cloud/audit", **named)
    assert status == 200
    assert {event["workspace_id"] for event in audit["events"]} == {victim.workspace.pk}
    assert call(operated, "GET", f"/v1/sandbox/sessions/{victim.session_id}", **named)[0] == 200
    status, minted, _ = call(operated, "POST", "/v1/cloud/join-tokens", {"label": "ops"}, **named)
    assert status == 201
    assert JoinToken.objects.get(pk=minted["join_token"]["id"]).workspace_id == victim.workspace.pk
    rotate = f"/v1/cloud/runtimes/{victim.runtime_id}/token/rotate"
    status, rotated, _ = call(operated, "POST", rotate, {}, **named)
    assert status == 200, rotated
    beat = {"status": "online", "caps": []}
    old = call(operated, "POST", "/v1/cloud/runtimes/heartbeat", beat,
               Authorization=f"Bearer {victim.runtime_token}")  # fmt: skip
    assert old[0] == 401
    rotated_by = AuditEvent.objects.get(action="runtime.token.rotated")
    assert rotated_by.actor == "operator"
    assert SandboxSession.objects.filter(pk=victim.session_id).exists()
