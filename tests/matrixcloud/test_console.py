"""The web console through Django's test client: every page needs a signed-in user,
acts in that user's workspace exactly as the API does (another workspace's object is a
404), checks CSRF on every form, and calls the same services as the API (rows, audit).
The real browser walk-through is ``tests/matrixcloud/browser/test_console_browser.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent, Invitation, SessionToken, User
from jobs.choices import JobStatus
from jobs.models import Job
from sandbox.models import SandboxSession
from sandbox.services import sandbox_create
from tests import factories
from tests.factories import PASSWORD, actor_of, token_in

pytestmark = pytest.mark.django_db

cast = factories.cast
outbox = factories.outbox
COMMAND = "node /opt/servers/everything/dist/index.js stdio"
PAGE_BUDGET = 100 * 1024

PAGES = [
    "/console/",
    "/console/catalog",
    "/console/sandboxes",
    "/console/jobs",
    "/console/models",
    "/console/runtimes",
    "/console/providers",
    "/console/members",
    "/console/audit",
]


def signed_in(user: User) -> Client:
    """A browser signed in through the console's own sign-in form."""
    client = Client(REMOTE_ADDR="127.0.0.1")
    response = client.post("/login", {"email": user.email, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def session_of(workspace: Any, command: str = COMMAND) -> SandboxSession:
    return sandbox_create(start_command=command, env=None, ttl_seconds=0, actor=actor_of(workspace))


@pytest.fixture
def owner(cast: factories.Cast) -> Client:
    return signed_in(cast.owner)


# --- authentication required ------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, "/console/sandboxes/sbx_x", "/console/jobs/job_x"])
def test_every_page_sends_a_stranger_to_sign_in(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login?next={path}"


def test_the_root_goes_to_the_overview(client: Client) -> None:
    assert client.get("/")["Location"] == "/console/"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_member_under_the_size_budget(
    cast: factories.Cast, path: str
) -> None:
    client = signed_in(cast.owner)
    response = client.get(path)
    assert response.status_code == 200
    assert len(response.content) < PAGE_BUDGET
    html = response.content.decode()
    assert '<main id="main"' in html
    assert 'aria-label="Main"' in html
    assert "https://" not in html.replace("https://huggingface.co", "")  # no CDN


def test_static_files_are_served_by_the_app(client: Client) -> None:
    for name in ("console.js", "console.css"):
        response = client.get(f"/static/console/{name}")
        assert response.status_code == 200
        body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
        assert len(body) < 40 * 1024
    assert client.get("/static/console/nothing.js").status_code == 404


# --- sign up, sign in, sign out ----------------------------------------------------------


def test_signup_creates_the_workspace_and_signs_in(
    client: Client, outbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/signup",
            {"name": "Ada", "email": "Ada@Example.com", "password": PASSWORD, "workspace": "Lab"},
        )
    assert response.status_code == 302
    assert response["Location"] == "/console/"
    user = User.objects.get(email="ada@example.com")
    assert AuditEvent.objects.filter(action="user.signup", actor=user.pk).exists()
    overview = client.get("/console/")
    assert overview.status_code == 200
    assert "Your email is not verified yet" in overview.content.decode()
    form = client.get("/signup").content.decode()  # help texts are tied to their fields
    assert 'aria-describedby="id_workspace_helptext"' in form
    assert '<small id="id_workspace_helptext">' in form
    # The emailed link lands on the console's verify page; opening it changes nothing.
    secret = token_in(outbox[0].body, "mxev")
    page = client.get(f"/verify?token={secret}")
    assert page.status_code == 200
    user.refresh_from_db()
    assert user.email_verified_at is None
    assert "Email verified." in client.post("/verify", {"token": secret}).content.decode()
    user.refresh_from_db()
    assert user.email_verified_at is not None


def test_signup_errors_are_shown_on_the_form(client: Client, cast: factories.Cast) -> None:
    taken = client.post("/signup", {"name": "X", "email": cast.owner.email, "password": PASSWORD})
    assert taken.status_code == 400
    assert "an account with this email already exists" in taken.content.decode()
    weak = client.post("/signup", {"name": "X", "email": "x@example.com", "password": "password"})
    assert weak.status_code == 400
    assert "too common" in weak.content.decode()
    assert not User.objects.filter(email="x@example.com").exists()


def test_sign_in_with_a_wrong_password_is_refused_and_audited(
    client: Client, cast: factories.Cast
) -> None:
    response = client.post("/login", {"email": cast.owner.email, "password": "wrong password 1"})
    assert response.status_code == 400
    assert "invalid email or password" in response.content.decode()
    assert client.get("/console/").status_code == 302
    assert AuditEvent.objects.filter(action="user.login", status="failure").exists()


def test_sign_in_follows_next_only_to_this_site(cast: factories.Cast) -> None:
    client = Client()
    data = {"email": cast.owner.email, "password": PASSWORD}
    assert client.post("/login?next=/console/jobs", data)["Location"] == "/console/jobs"
    other = Client()
    assert other.post("/login?next=https://evil.test/", data)["Location"] == "/console/"


def test_sign_out_revokes_the_session_it_started(cast: factories.Cast) -> None:
    client = signed_in(cast.member)
    token = SessionToken.objects.filter(user=cast.member).latest("created_at")
    assert token.revoked_at is None
    assert client.post("/logout")["Location"] == "/login"
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert client.get("/console/").status_code == 302
    assert client.get("/logout").status_code == 405  # never a GET that signs out


def test_every_form_checks_csrf(cast: factories.Cast) -> None:
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/login", {"email": cast.owner.email, "password": PASSWORD}).status_code == (
        403
    )
    page = strict.get("/login")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token is not None
    data = {"email": cast.owner.email, "password": PASSWORD, "csrfmiddlewaretoken": token[1]}
    assert strict.post("/login", data).status_code == 302
    # Signed in, a write without the token is still refused and changes nothing.
    assert strict.post("/console/sandboxes", {"start_command": COMMAND}).status_code == 403
    assert not SandboxSession.objects.exists()


def test_forgot_and_reset_password(
    client: Client, cast: factories.Cast, outbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/forgot", {"email": cast.member.email})
    assert response["Location"] == "/login"
    unknown = client.post("/forgot", {"email": "nobody@example.com"})
    assert unknown["Location"] == "/login"  # the same answer either way
    secret = token_in(outbox[0].body, "mxpr")
    assert client.get(f"/reset?token={secret}").status_code == 200
    bad = client.post("/reset", {"token": "mxpr_" + "0" * 64, "password": "new harbour 77"})
    assert bad.status_code == 400
    assert "invalid or expired reset link" in bad.content.decode()
    done = client.post("/reset", {"token": secret, "password": "new harbour lantern 77"})
    assert done["Location"] == "/login"
    ok = client.post("/login", {"email": cast.member.email, "password": "new harbour lantern 77"})
    assert ok.status_code == 302


def test_invitations_from_the_members_page_and_accepting_one(
    cast: factories.Cast, outbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    owner = signed_in(cast.owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post("/console/members", {"email": "new@northwind.test", "role": "Member"})
    assert response["Location"] == "/console/members"
    assert Invitation.objects.filter(workspace=cast.workspace, email="new@northwind.test").exists()
    assert "new@northwind.test" in owner.get("/console/members").content.decode()
    secret = token_in(outbox[0].body, "mxin")
    newcomer = Client()
    joined = newcomer.post("/invite", {"token": secret, "name": "Nia", "password": PASSWORD})
    assert joined["Location"] == "/console/"
    assert "Nia" in newcomer.get("/console/members").content.decode()
    # A Member may not invite: the service refuses, the form says why.
    member = signed_in(cast.member)
    refused = member.post("/console/members", {"email": "x@northwind.test", "role": "Member"})
    assert refused.status_code == 400
    assert "only a workspace Owner or Admin may invite members" in refused.content.decode()


def test_the_audit_log_is_for_owners_and_admins(cast: factories.Cast) -> None:
    page = signed_in(cast.admin).get("/console/audit")
    assert page.status_code == 200
    assert "workspace.member.joined" in page.content.decode()
    refused = signed_in(cast.member).get("/console/audit")
    assert refused.status_code == 403
    assert "only a workspace Owner or Admin may read the audit log" in refused.content.decode()
    outsider = signed_in(cast.outsider).get("/console/audit").content.decode()
    assert "northwind" not in outsider


# --- sandboxes and jobs: the API's services and scoping ------------------------------------


def test_starting_a_sandbox_from_a_command(owner: Client, cast: factories.Cast) -> None:
    response = owner.post("/console/sandboxes", {"start_command": COMMAND, "env": "A=1"})
    session = SandboxSession.objects.get()
    assert response["Location"] == f"/console/sandboxes/{session.pk}"
    assert session.workspace == cast.workspace
    assert session.env == {"A": "1"}
    assert AuditEvent.objects.filter(action="sandbox.created", target=session.pk).exists()
    page = owner.get(response["Location"]).content.decode()
    assert "queue" in page  # the events so far
    assert f'data-stream="/v1/sandbox/sessions/{session.pk}/events"' in page
    listed = owner.get("/console/sandboxes").content.decode()
    assert session.pk in listed


def test_a_refused_command_says_why(owner: Client) -> None:
    response = owner.post("/console/sandboxes", {"start_command": "bash -c 'rm -rf /'"})
    assert response.status_code == 400
    assert "not allowed" in response.content.decode()
    assert not SandboxSession.objects.exists()


def test_launching_from_the_catalog(owner: Client) -> None:
    response = owner.post("/console/catalog/launch", {"item_id": "mcp_server:everything"})
    session = SandboxSession.objects.get()
    assert response["Location"] == f"/console/sandboxes/{session.pk}"
    assert session.start_command == "npx -y @modelcontextprotocol/server-everything"
    model = owner.post("/console/catalog/launch", {"item_id": "model:qwen2.5-7b"})
    assert model["Location"] == "/console/catalog"
    assert SandboxSession.objects.count() == 1


def test_a_tool_call_before_ready_and_stop(owner: Client, cast: factories.Cast) -> None:
    session = session_of(cast.workspace)
    call = owner.post(
        f"/console/sandboxes/{session.pk}/call", {"name": "echo", "arguments": '{"message":"x"}'}
    )
    assert call.status_code == 400
    assert "sandbox not ready" in call.content.decode()
    bad = owner.post(f"/console/sandboxes/{session.pk}/call", {"name": "echo", "arguments": "[1]"})
    assert "the arguments must be a JSON object" in bad.content.decode()
    stopped = owner.post(f"/console/sandboxes/{session.pk}/stop")
    assert stopped["Location"] == f"/console/sandboxes/{session.pk}"
    session.job.refresh_from_db()
    assert session.job.status == JobStatus.CANCELLED
    assert AuditEvent.objects.filter(action="job.cancelled", target=session.job.pk).exists()


def test_another_workspaces_sandbox_and_job_are_404(cast: factories.Cast) -> None:
    session = session_of(cast.workspace)
    outsider = signed_in(cast.outsider)
    for path in (
        f"/console/sandboxes/{session.pk}",
        f"/console/jobs/{session.job.pk}",
    ):
        assert outsider.get(path).status_code == 404
    for path in (
        f"/console/sandboxes/{session.pk}/stop",
        f"/console/sandboxes/{session.pk}/call",
        f"/console/jobs/{session.job.pk}/cancel",
    ):
        assert outsider.post(path, {"name": "echo"}).status_code == 404
    session.job.refresh_from_db()
    assert session.job.status == JobStatus.QUEUED
    assert session.pk not in outsider.get("/console/sandboxes").content.decode()
    assert session.job.pk not in outsider.get("/console/jobs").content.decode()
    assert signed_in(cast.member).get(f"/console/sandboxes/{session.pk}").status_code == 200


def test_the_job_list_filters_and_the_job_page(owner: Client, cast: factories.Cast) -> None:
    session = session_of(cast.workspace)
    job = session.job
    listed = owner.get("/console/jobs?type=mcp.test&status=queued").content.decode()
    assert job.pk in listed
    assert job.pk not in owner.get("/console/jobs?status=complete").content.decode()
    assert owner.get("/console/jobs?status=bogus").status_code == 400
    assert owner.get("/console/jobs?cursor=%%%").status_code == 400
    page = owner.get(f"/console/jobs/{job.pk}").content.decode()
    assert f'data-stream="/v1/jobs/{job.pk}/events"' in page
    assert "Job queued" in page
    assert owner.post(f"/console/jobs/{job.pk}/cancel").status_code == 302
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_overview_counts_are_the_workspaces_own(cast: factories.Cast) -> None:
    session_of(cast.workspace)
    mine = signed_in(cast.owner).get(reverse("console:overview-counts")).json()
    theirs = signed_in(cast.outsider).get(reverse("console:overview-counts")).json()
    assert (mine["queued"], mine["live_sandboxes"]) == (1, 1)
    assert (theirs["queued"], theirs["live_sandboxes"]) == (0, 0)


# --- runtimes, join tokens, provider keys ----------------------------------------------


def test_minting_a_join_token_shows_its_secret_once(owner: Client, cast: factories.Cast) -> None:
    """Post/redirect/get: the POST answers with a redirect (no secret in it), the next
    GET shows the secret uncached, and a reload shows none and mints nothing."""
    from runtimes.models import JoinToken

    response = owner.post("/console/runtimes", {"label": "edge", "max_uses": "2"})
    assert (response.status_code, response["Location"]) == (302, "/console/runtimes")
    assert b"mxrt_" not in response.content
    token = JoinToken.objects.get(workspace=cast.workspace)
    assert (token.label, token.max_uses) == ("edge", 2)
    shown = owner.get("/console/runtimes")
    assert shown["Cache-Control"] == "no-store"
    html = shown.content.decode()
    secret = re.search(r'<code id="join-secret">([^<]+)</code>', html)
    assert secret is not None
    assert secret[1].startswith("mxrt_")
    assert secret[1] not in token.token_hash
    assert AuditEvent.objects.filter(action="runtime.join_token.created", target=token.pk).exists()
    again = owner.get("/console/runtimes")
    assert token.pk in again.content.decode()
    assert secret[1] not in again.content.decode()  # never shown again
    assert "join-secret" not in again.content.decode()
    assert not again.has_header("Cache-Control") or again["Cache-Control"] != "no-store"
    assert JoinToken.objects.count() == 1  # the reload minted nothing
    assert token.pk not in signed_in(cast.outsider).get("/console/runtimes").content.decode()
    refused = signed_in(cast.member).post("/console/runtimes", {"label": "x"})
    assert refused.status_code == 400
    assert "only a workspace Owner or Admin may mint join tokens" in refused.content.decode()
    assert JoinToken.objects.count() == 1
    bad = owner.post("/console/runtimes", {"ttl_minutes": "99999999"})
    assert bad.status_code == 400
    assert "ttl_minutes must be between" in bad.content.decode()
    assert "join-secret" not in bad.content.decode()


def _registered(cast: factories.Cast, api: Any, name: str = "edge-box") -> tuple[str, str]:
    """A runtime registered to the cast's workspace over the API: its id and token."""
    from runtimes.services import join_token_issue

    minted = join_token_issue(actor=actor_of(cast.workspace))
    body = {"join_token": minted.secret, "name": name}
    registered = api.post("/v1/cloud/runtimes/register", body)
    assert registered.status_code == 201, registered.content
    body = registered.json()
    return body["runtime"]["id"], body["runtime_token"]


def _heartbeat(api: Any, token: str) -> int:
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    try:
        return int(api.post("/v1/cloud/runtimes/heartbeat", {}).status_code)
    finally:
        api.credentials()


@pytest.mark.parametrize("action", ["remove", "token/rotate", "token/revoke"])
def test_runtime_actions_are_for_the_workspaces_owners_and_admins(
    owner: Client, cast: factories.Cast, api: Any, action: str
) -> None:
    """The API's checks: another workspace's runtime is a 404, a Member is refused (403),
    a GET is a 405, and nothing changes; a form without its CSRF token is refused."""
    from runtimes.models import Runtime

    runtime_id, token = _registered(cast, api)
    path = f"/console/runtimes/{runtime_id}/{action}"
    before = Runtime.objects.values().get(pk=runtime_id)
    assert signed_in(cast.outsider).post(path).status_code == 404
    refused = signed_in(cast.member).post(path)
    assert refused.status_code == 403
    assert "only a workspace Owner or Admin may" in refused.content.decode()
    assert owner.get(path).status_code == 405
    assert owner.post(f"/console/runtimes/rt_nope/{action}").status_code == 404
    strict = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    strict.post("/login", {"email": cast.owner.email, "password": PASSWORD})
    assert strict.post(path).status_code == 403
    assert Runtime.objects.values().get(pk=runtime_id) == before
    assert _heartbeat(api, token) == 200
    assert not AuditEvent.objects.filter(target=runtime_id, action__startswith="runtime.t").exists()


def test_removing_a_runtime_from_the_console(owner: Client, cast: factories.Cast, api: Any) -> None:
    from runtimes.models import Runtime

    runtime_id, token = _registered(cast, api)
    response = owner.post(f"/console/runtimes/{runtime_id}/remove")
    assert response["Location"] == "/console/runtimes"
    assert not Runtime.objects.filter(pk=runtime_id).exists()
    audit = AuditEvent.objects.get(action="runtime.removed", target=runtime_id)
    assert (audit.actor, audit.meta["name"]) == (cast.owner.pk, "edge-box")
    assert _heartbeat(api, token) == 401  # its token died with it
    page = owner.get("/console/runtimes").content.decode()
    assert f"Runtime edge-box ({runtime_id}) removed" in page
    assert f'data-runtime="{runtime_id}"' not in page
    assert owner.post(f"/console/runtimes/{runtime_id}/remove").status_code == 404


def test_revoking_and_rotating_a_runtime_token_from_the_console(
    owner: Client, cast: factories.Cast, api: Any
) -> None:
    """Revoke: heartbeats are refused. Rotate: a new token, shown on the next GET only
    (post/redirect/get, uncached), that works while the old one does not."""
    from runtimes.models import Runtime

    runtime_id, old = _registered(cast, api)
    assert owner.post(f"/console/runtimes/{runtime_id}/token/revoke").status_code == 302
    assert _heartbeat(api, old) == 401
    assert AuditEvent.objects.filter(action="runtime.token.revoked", target=runtime_id).exists()
    page = owner.get("/console/runtimes").content.decode()
    assert "revoked" in page
    assert f"The token of edge-box ({runtime_id}) is revoked." in page

    rotated = owner.post(f"/console/runtimes/{runtime_id}/token/rotate")
    assert (rotated.status_code, rotated["Location"]) == (302, "/console/runtimes")
    shown = owner.get("/console/runtimes")
    assert shown["Cache-Control"] == "no-store"
    found = re.search(r'<code id="runtime-secret">([0-9a-f]{64})</code>', shown.content.decode())
    assert found is not None
    new = found[1]
    assert new not in Runtime.objects.get(pk=runtime_id).token_hash
    assert (_heartbeat(api, new), _heartbeat(api, old)) == (200, 401)
    audit = AuditEvent.objects.get(action="runtime.token.rotated", target=runtime_id)
    assert (audit.actor, audit.meta["was_revoked"]) == (cast.owner.pk, True)
    reloaded = owner.get("/console/runtimes").content.decode()
    assert new not in reloaded
    assert "runtime-secret" not in reloaded
    assert AuditEvent.objects.filter(action="runtime.token.rotated").count() == 1
    assert new not in AuditEvent.objects.get(action="runtime.token.rotated").meta.values()


def test_the_activity_versions_move_with_what_the_lists_show(
    cast: factories.Cast, api: Any
) -> None:
    """The activity stream's versions (what the open lists compare) change when a job is
    created or moves on, and when a runtime joins or its token changes; not otherwise,
    and never from another workspace."""
    from jobs.events import job_event_emit
    from matrixcloud.console.views.activity import activity_versions

    first = activity_versions(cast.workspace)
    assert activity_versions(cast.workspace) == first
    job = session_of(cast.workspace).job
    created = activity_versions(cast.workspace)
    assert created["jobs"] != first["jobs"]
    assert created["runtimes"] == first["runtimes"]
    job_event_emit(job.pk, step="progress", status="running", message="half way")
    assert activity_versions(cast.workspace)["jobs"] != created["jobs"]
    runtime_id, _token = _registered(cast, api)
    joined = activity_versions(cast.workspace)
    assert joined["runtimes"] != created["runtimes"]
    theirs = activity_versions(cast.other_workspace)
    session_of(cast.other_workspace)
    assert activity_versions(cast.workspace) == joined
    assert activity_versions(cast.other_workspace)["jobs"] != theirs["jobs"]
    from runtimes.models import Runtime
    from runtimes.services import runtime_token_revoke

    runtime_token_revoke(runtime=Runtime.objects.get(pk=runtime_id), actor=actor_of())
    assert activity_versions(cast.workspace)["runtimes"] != joined["runtimes"]


def test_the_activity_stream_needs_a_signed_in_console(client: Client) -> None:
    response = client.get("/console/activity")
    assert (response.status_code, response["Location"]) == (302, "/login?next=/console/activity")


def test_revoking_a_join_token_and_scoping(owner: Client, cast: factories.Cast) -> None:
    from runtimes.services import join_token_issue

    minted = join_token_issue(actor=actor_of(cast.workspace))
    path = f"/console/join-tokens/{minted.token.pk}/revoke"
    assert signed_in(cast.outsider).post(path).status_code == 404
    assert signed_in(cast.member).post(path).status_code == 403
    minted.token.refresh_from_db()
    assert minted.token.revoked_at is None
    assert owner.post(path)["Location"] == "/console/runtimes"
    minted.token.refresh_from_db()
    assert minted.token.revoked_at is not None


def test_registered_runtimes_are_listed_with_their_state(
    owner: Client, cast: factories.Cast, api: Any
) -> None:
    from runtimes.services import join_token_issue

    minted = join_token_issue(actor=actor_of(cast.workspace))
    registered = api.post(
        "/v1/cloud/runtimes/register", {"join_token": minted.secret, "name": "edge-box"}
    )
    assert registered.status_code == 201, registered.content
    html = owner.get("/console/runtimes").content.decode()
    assert "edge-box" in html
    assert "edge-box" not in signed_in(cast.outsider).get("/console/runtimes").content.decode()


def test_provider_keys_show_only_a_hint(owner: Client, cast: factories.Cast) -> None:
    from accounts.models import ProviderCredential

    secret = "hf_supersecretvalue1234"
    response = owner.post("/console/providers", {"provider": "huggingface", "secret": secret})
    assert response["Location"] == "/console/providers"
    credential = ProviderCredential.objects.get(workspace=cast.workspace)
    html = owner.get("/console/providers").content.decode()
    assert "1234" in html
    assert secret not in html
    assert credential.hint.endswith("1234")
    assert (
        credential.hint not in signed_in(cast.outsider).get("/console/providers").content.decode()
    )
    member = signed_in(cast.member)
    refused = member.post("/console/providers", {"provider": "openai", "secret": "sk-123456789"})
    assert refused.status_code == 400
    assert "only a workspace Owner or Admin may store provider credentials" in (
        refused.content.decode()
    )
    delete = f"/console/providers/{credential.pk}/delete"
    assert signed_in(cast.outsider).post(delete).status_code == 404
    assert member.post(delete).status_code == 403
    assert owner.post(delete)["Location"] == "/console/providers"
    assert not ProviderCredential.objects.exists()


def test_owners_mark_provider_keys_usable_by_members(owner: Client, cast: factories.Cast) -> None:
    """On create (the checkbox) and with the per-key button; Members and outsiders may
    not; each change is audited."""
    from accounts.models import AuditEvent, ProviderCredential

    owner.post("/console/providers", {"provider": "openai", "secret": "sk-owner-12345678",
                                      "usable_by_members": "on"})  # fmt: skip
    credential = ProviderCredential.objects.get(workspace=cast.workspace)
    assert credential.usable_by_members is True
    assert "Stop members" in owner.get("/console/providers").content.decode()
    toggle = f"/console/providers/{credential.pk}/members"
    member = signed_in(cast.member)
    assert member.post(toggle, {"usable": "0"}).status_code == 403
    assert signed_in(cast.outsider).post(toggle, {"usable": "0"}).status_code == 404
    credential.refresh_from_db()
    assert credential.usable_by_members is True
    assert owner.post(toggle, {"usable": "0"})["Location"] == "/console/providers"
    credential.refresh_from_db()
    assert credential.usable_by_members is False
    html = member.get("/console/providers").content.decode()
    assert "may not use" in html
    assert "Let members use" not in html  # no buttons for a Member
    changed = AuditEvent.objects.filter(action="provider.credential.updated").get()
    assert (changed.actor, changed.meta["usable_by_members"]) == (cast.owner.pk, False)


# --- models ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub() -> Iterator[Any]:
    from tests.fake_hub import standard_hub

    with standard_hub() as running:
        yield running


@pytest.fixture
def hub_endpoint(hub: Any, settings: Any) -> Any:
    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    return hub


def test_searching_importing_and_attaching_a_model(
    owner: Client, cast: factories.Cast, hub_endpoint: Any, settings: Any
) -> None:
    from models_registry.models import ModelInstallation, ModelProfile

    found = owner.get("/console/models?q=acme").content.decode()
    assert found.index("acme/encoder-350m") < found.index("acme/tiny-llama-1B")  # by downloads
    imported = owner.post("/console/models/import", {"external_id": "acme/tiny-llama-1B"})
    assert imported["Location"] == "/console/models"
    profile = ModelProfile.objects.get(workspace=cast.workspace)
    assert (profile.external_id, profile.task) == ("acme/tiny-llama-1B", "text-generation")
    assert profile.metadata["revision"] == "main"
    assert AuditEvent.objects.filter(action="model.imported").exists()
    missing = owner.post("/console/models/import", {"external_id": "acme/nothing-here"})
    assert missing.status_code == 400
    assert "could not resolve model" in missing.content.decode()

    attach = f"/console/models/{profile.pk}/attach"
    body = {"runtime_id": settings.MATRIX_RUNTIME_ID, "install_mode": "pull_from_source"}
    assert owner.post(attach, {**body, "runtime_id": "rt_nope"}).status_code == 400
    assert owner.post(attach, {**body, "serving_engine": "vLLM"})["Location"] == "/console/models"
    installation = ModelInstallation.objects.get(workspace=cast.workspace)
    assert (installation.serving_engine, installation.install_mode) == ("vLLM", "pull_from_source")
    page = owner.get("/console/models").content.decode()
    assert f'data-job-stream="/v1/jobs/{installation.job_id}/events"' in page
    assert f'id="bar-{installation.pk}"' in page

    outsider = signed_in(cast.outsider)
    theirs = outsider.get("/console/models").content.decode()
    assert "acme/tiny-llama-1B" not in theirs
    assert outsider.post(attach, body).status_code == 404
    assert ModelInstallation.objects.count() == 1


# --- MatrixShell --------------------------------------------------------------------------


def test_matrixshell_is_off_unless_enabled(owner: Client) -> None:
    assert 'href="/console/shell"' not in owner.get("/console/").content.decode()
    response = owner.get("/console/shell")
    assert response.status_code == 403
    assert "MatrixShell is disabled" in response.content.decode()
    assert owner.post("/console/shell/install").status_code == 403
    assert not Job.objects.filter(type="matrixshell.install").exists()


def test_matrixshell_page_install_and_refusals(
    owner: Client, cast: factories.Cast, settings: Any
) -> None:
    settings.MATRIX_MATRIXSHELL_ENABLED = True
    assert 'href="/console/shell"' in owner.get("/console/").content.decode()
    page = owner.get("/console/shell").content.decode()
    assert "Install MatrixShell" in page
    refused = owner.post("/console/shell", {"command": "rm -rf /"})
    assert refused.status_code == 400
    assert "refused by safety denylist" in refused.content.decode()
    assert AuditEvent.objects.filter(action="matrixshell.exec", status="failure").exists()
    early = owner.post("/console/shell", {"command": "echo hi"})
    assert "MatrixShell sandbox is not installed yet" in early.content.decode()
    installing = owner.post("/console/shell/install")
    job = Job.objects.get(type="matrixshell.install")
    assert installing["Location"] == f"/console/jobs/{job.pk}"
    assert job.workspace == cast.workspace


def test_the_audit_log_pages_back(owner: Client, cast: factories.Cast) -> None:
    from accounts.audit import audit_record

    for n in range(120):
        audit_record(action="test.filler", actor="test", workspace=cast.workspace, target=f"n{n}")
    first = owner.get("/console/audit").content.decode()
    assert ">n119<" in first
    assert ">n0<" not in first
    cursor = re.search(r'href="\?cursor=(\d+)"', first)
    assert cursor is not None
    older = owner.get(f"/console/audit?cursor={cursor[1]}").content.decode()
    assert ">n0<" in older
    assert ">n119<" not in older
    assert owner.get("/console/audit?cursor=abc").status_code == 400


def test_ending_the_session_elsewhere_ends_the_console_session(cast: factories.Cast) -> None:
    client = signed_in(cast.admin)
    assert client.get("/console/jobs").status_code == 200
    token = SessionToken.objects.filter(user=cast.admin).latest("created_at")
    SessionToken.objects.filter(pk=token.pk).update(revoked_at=token.created_at)  # logout-all
    response = client.get("/console/jobs")
    assert response["Location"] == "/login?next=/console/jobs"
    assert client.get("/console/").status_code == 302  # the cookie session is gone too


def test_logging_out_everywhere_with_the_cookie_is_the_service_and_audited(
    cast: factories.Cast,
) -> None:
    client = signed_in(cast.admin)  # a cookie, and the bearer session behind it
    for user in (cast.admin, cast.admin, cast.member):
        factories.issue(user)
    live = SessionToken.objects.filter(revoked_at__isnull=True)
    admins = live.filter(user=cast.admin).count()
    assert admins >= 3
    response = client.post("/v1/auth/logout?all=true", content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert not live.filter(user=cast.admin).exists()
    assert live.filter(user=cast.member).exists()  # only the user's own
    event = AuditEvent.objects.get(action="user.logout", actor=cast.admin.pk)
    assert event.meta == {"all": True, "sessions": admins}
    assert event.workspace_id == cast.workspace.pk
    assert event.ip == "127.0.0.1"
    assert client.get("/console/jobs")["Location"] == "/login?next=/console/jobs"


def test_switching_between_the_users_workspaces(cast: factories.Cast) -> None:
    from accounts.services import invitation_accept, invitation_create

    _, secret = invitation_create(
        email=cast.outsider.email, actor=actor_of(cast.workspace, cast.owner, name="test")
    )
    invitation_accept(token=secret, password=PASSWORD)
    session = session_of(cast.workspace)
    client = signed_in(cast.outsider)  # acts in Globex, the older membership
    page = client.get("/console/sandboxes").content.decode()
    assert session.pk not in page
    assert 'name="workspace_id"' in page
    switched = client.post("/console/workspace", {"workspace_id": cast.workspace.pk})
    assert switched["Location"] == "/console/"
    assert session.pk in client.get("/console/sandboxes").content.decode()
    assert client.get(f"/console/sandboxes/{session.pk}").status_code == 200
    _, other, _ = factories.signup("Stan", "stan@else.test", "Elsewhere")
    assert client.post("/console/workspace", {"workspace_id": other.pk}).status_code == 404
    assert session.pk in client.get("/console/sandboxes").content.decode()
    assert 'name="workspace_id"' not in signed_in(cast.member).get("/console/").content.decode()
