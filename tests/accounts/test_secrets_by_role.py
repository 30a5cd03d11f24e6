"""Workspace secrets by role: a Member may use a provider credential only when an Owner
or Admin marked it usable by members.

The attack: a Member puts ``${secret:openai}`` in its own sandbox's env (or runs
``agent.run`` with the workspace's openai credential) and so reads, or spends, the
Owner's key. Here it is refused at creation, on every way in, with a 403 naming the
credential and an audited refusal; the start-time check (the creator's role when the
host resolves the secret) is tested on its function here and end to end, with a real
host and a real sandboxed server, in ``test_cloud_providers_sandbox``.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEvent, Membership, ProviderCredential
from accounts.principals import Actor
from accounts.services.providers import CredentialForbidden, provider_upsert
from jobs.models import Job
from sandbox.models import SandboxSession
from sandbox.secrets import resolve_secret
from tests import factories
from tests.factories import actor_of, bearer, error, issue
from tests.sandbox_processes import python_server

pytestmark = pytest.mark.django_db

cast = factories.cast
PROVIDERS = "/v1/cloud/providers"
SESSIONS = "/v1/sandbox/sessions"
JOBS = "/v1/jobs"
OWNER_KEY = "sk-owner-only-0a1b2c3d4e5f"
NOT_FOR_MEMBERS = (
    "the openai/default credential is not usable by members: an Owner or Admin can allow "
    "it (usable_by_members on /v1/cloud/providers)"
)
COMMAND = python_server("env_server.py")


@pytest.fixture
def owners_key(cast: Any) -> ProviderCredential:
    return provider_upsert(
        provider="openai", secret=OWNER_KEY, actor=actor_of(cast.workspace, name=str(cast.owner.pk))
    )


def sandbox(api: APIClient, token: str, env: dict[str, str]) -> Any:
    return api.post(SESSIONS, {"start_command": COMMAND, "env": env}, **bearer(token))


def job(api: APIClient, token: str, job_type: str, **payload: Any) -> Any:
    body = {"type": job_type, "payload": {"start_command": COMMAND, **payload}}
    return api.post(JOBS, body, **bearer(token))


def refusals() -> list[tuple[str, str, str, str]]:
    rows = AuditEvent.objects.filter(action="provider.credential.refused").order_by("seq")
    return [(e.actor, e.target, e.meta["label"], e.meta["purpose"]) for e in rows]


# Every way a Member's job can carry the reference or pick the credential.
MEMBER_ATTEMPTS = [
    pytest.param(lambda api, t: sandbox(api, t, {"OPENAI_API_KEY": "${secret:openai}"}),
                 "sandbox.env", id="sandbox-session"),
    pytest.param(lambda api, t: job(api, t, "mcp.test", env={"KEY": "secret://openai"}),
                 "sandbox.env", id="mcp.test-job"),
    pytest.param(lambda api, t: job(api, t, "tool.run", tool="getenv",
                                    env={"OPENAI_API_KEY": "${secret:openai/default}"}),
                 "sandbox.env", id="tool.run-job"),
    pytest.param(lambda api, t: job(api, t, "mcp.run", env={"API_KEY": "${secret:OpenAI}"}),
                 "sandbox.env", id="mcp.run-job"),
    pytest.param(lambda api, t: job(api, t, "agent.run", prompt="hi", model="gpt-x"),
                 "agent.run", id="agent.run-credential"),
    pytest.param(lambda api, t: job(api, t, "agent.run", prompt="hi", model="gpt-x",
                                    base_url="http://127.0.0.1:9/v1",
                                    env={"OPENAI_API_KEY": "${secret:openai}"}),
                 "sandbox.env", id="agent.run-env"),
]  # fmt: skip


@pytest.mark.parametrize(("attempt", "purpose"), MEMBER_ATTEMPTS)
def test_a_members_job_naming_the_owners_key_is_refused_and_audited(
    api: APIClient, cast: Any, owners_key: ProviderCredential, attempt: Any, purpose: str
) -> None:
    response = attempt(api, issue(cast.member))
    assert response.status_code == 403, response.content
    assert response.json() == error(NOT_FOR_MEMBERS, 403)
    assert not Job.objects.exists()
    assert not SandboxSession.objects.exists()
    assert refusals() == [(cast.member.pk, "openai", "default", purpose)]
    refused = AuditEvent.objects.get(action="provider.credential.refused")
    assert (refused.status, refused.workspace_id) == ("failure", cast.workspace.pk)
    assert OWNER_KEY not in repr(refused.meta)


@pytest.mark.parametrize(("attempt", "purpose"), MEMBER_ATTEMPTS)
def test_owners_and_admins_may_and_members_once_it_is_marked(
    api: APIClient, cast: Any, owners_key: ProviderCredential, attempt: Any, purpose: str
) -> None:
    for manager in (cast.owner, cast.admin):
        assert attempt(api, issue(manager)).status_code == 202
    marked = api.patch(
        f"{PROVIDERS}/{owners_key.pk}", {"usable_by_members": True}, **bearer(issue(cast.admin))
    )
    assert marked.status_code == 200, marked.content
    assert marked.json()["provider"]["usable_by_members"] is True
    assert attempt(api, issue(cast.member)).status_code == 202
    assert refusals() == []


def test_a_reference_to_a_credential_the_workspace_lacks_is_left_to_the_start(
    api: APIClient, cast: Any, owners_key: ProviderCredential
) -> None:
    """Nothing to protect: the host fails it as an unknown secret, as before."""
    response = sandbox(api, issue(cast.member), {"KEY": "${secret:openai/missing}"})
    assert response.status_code == 202
    assert refusals() == []


def test_another_workspaces_member_cannot_reach_the_key_at_all(
    api: APIClient, cast: Any, owners_key: ProviderCredential
) -> None:
    """The outsider's reference names its own workspace's credentials, which lack it."""
    response = sandbox(api, issue(cast.outsider), {"OPENAI_API_KEY": "${secret:openai}"})
    assert response.status_code == 202  # its own workspace has no openai: fails at start
    assert refusals() == []
    created = Job.objects.get()
    assert created.workspace_id == cast.other_workspace.pk


# --- who may mark a credential usable by members ---------------------------------------------


def test_usable_by_members_is_set_on_create_and_kept_on_replace(api: APIClient, cast: Any) -> None:
    owner = issue(cast.owner)
    body = {"provider": "openai", "secret": OWNER_KEY, "usable_by_members": True}
    created = api.post(PROVIDERS, body, **bearer(owner)).json()["provider"]
    assert created["usable_by_members"] is True
    replaced = api.post(PROVIDERS, {"provider": "openai", "secret": "sk-new-0123456789"},
                        **bearer(owner)).json()["provider"]  # fmt: skip
    assert replaced["usable_by_members"] is True  # not given: unchanged
    plain = api.post(PROVIDERS, {"provider": "groq", "secret": "gsk-0123456789"}, **bearer(owner))
    assert plain.json()["provider"]["usable_by_members"] is False  # the default
    listed = api.get(PROVIDERS, **bearer(issue(cast.member))).json()["providers"]
    assert {p["provider"]: p["usable_by_members"] for p in listed} == {
        "groq": False,
        "openai": True,
    }


def test_only_an_owner_or_admin_marks_a_credential(
    api: APIClient, cast: Any, owners_key: ProviderCredential
) -> None:
    url = f"{PROVIDERS}/{owners_key.pk}"
    member = api.patch(url, {"usable_by_members": True}, **bearer(issue(cast.member)))
    assert member.json() == error("only a workspace Owner or Admin may change provider "
                                  "credentials", 403)  # fmt: skip
    member_post = api.post(
        PROVIDERS,
        {"provider": "openai", "secret": "sk-member-0123456789", "usable_by_members": True},
        **bearer(issue(cast.member)),
    )
    assert member_post.status_code == 403
    outsider = api.patch(url, {"usable_by_members": True}, **bearer(issue(cast.outsider)))
    assert outsider.json() == error("provider credential not found", 404)
    bad = api.patch(url, {"usable_by_members": "perhaps"}, **bearer(issue(cast.owner)))
    assert bad.status_code == 400
    assert api.patch(url, {"usable_by_members": True}).status_code == 401  # local-dev anon
    owners_key.refresh_from_db()
    assert owners_key.usable_by_members is False
    assert (
        api.patch(url, {"usable_by_members": True}, **bearer(issue(cast.owner))).status_code == 200
    )
    updated = AuditEvent.objects.filter(action="provider.credential.updated").get()
    assert (updated.actor, updated.meta["usable_by_members"]) == (cast.owner.pk, True)


# --- the start-time check ------------------------------------------------------------------


def test_the_start_check_uses_the_creators_role_at_start(
    cast: Any, owners_key: ProviderCredential
) -> None:
    """An Admin who created a session and was made a Member before it started gets no
    key: the host asks with the creator, and the role now decides (audited)."""

    def creator(user: Any) -> Actor:  # as the host builds it when the session starts
        return Actor.job_creator(cast.workspace.pk, user.pk)

    assert resolve_secret(creator(cast.admin), "openai") == OWNER_KEY
    Membership.objects.filter(user=cast.admin, workspace=cast.workspace).update(role="Member")
    with pytest.raises(CredentialForbidden, match="not usable by members"):
        resolve_secret(creator(cast.admin), "openai")
    assert refusals() == [(cast.admin.pk, "openai", "default", "sandbox.env")]
    with pytest.raises(CredentialForbidden, match="not a member of the workspace"):
        resolve_secret(creator(cast.outsider), "openai")
    reads = AuditEvent.objects.filter(action="provider.credential.read")
    assert [(r.actor, r.status) for r in reads] == [(cast.admin.pk, "success")]
