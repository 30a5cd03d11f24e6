"""A workspace's provider credential reaches a real sandboxed server through
``${secret:NAME}``, under a real host (bubblewrap), and is metered and audited; an
unknown or unreadable secret fails the start clearly, naming the key and the secret.
A Member's sandbox gets the Owner's key only once an Owner or Admin marked it usable by
members, and the host checks the creator's role again when it starts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from accounts.models import AuditEvent, Membership
from accounts.services import local_workspace
from accounts.services.providers import provider_upsert
from accounts.services.usage import usage_summary
from jobs.models import Job, JobEvent
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from sandbox.models import SandboxSession
from sandbox.services import sandbox_create
from tests.factories import actor_of, bearer, issue, join, signup
from tests.jobs.test_jobs_worker import wait_for
from tests.sandbox_processes import (
    Host,
    end_all_sessions,
    python_server,
    running_host,
    steps,
    terminal,
    wait_step,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SESSIONS = "/v1/sandbox/sessions"
HF_TOKEN = "hf_sandboxed_value_5f4e3d2c"
WORK_KEY = "sk-work-key-0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def host(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("these tests run servers under bubblewrap, which is unavailable here")
    with running_host(tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


@pytest.fixture(autouse=True)
def clean(host: Host) -> Iterator[None]:
    yield
    end_all_sessions()


def create(api: Any, env: dict[str, str]) -> dict[str, Any]:
    command = python_server("env_server.py")
    response = api.post(SESSIONS, {"start_command": command, "env": env})
    assert response.status_code == 202, response.content
    return dict(response.json())


def getenv(api: Any, session_id: str, name: str) -> str:
    body = {"name": "getenv", "arguments": {"name": name}}
    response = api.post(f"{SESSIONS}/{session_id}/tools/call", body)
    assert response.status_code == 200, response.content
    return str(response.json()["result"]["content"][0]["text"])


def test_secret_references_reach_the_sandboxed_server(api: Any) -> None:
    workspace = local_workspace()
    provider_upsert(provider="huggingface", secret=HF_TOKEN, actor=actor_of(workspace))
    provider_upsert(provider="openai", label="work", secret=WORK_KEY, actor=actor_of(workspace))
    created = create(
        api,
        {
            "HF_TOKEN": "${secret:huggingface}",
            "OPENAI_API_KEY": "secret://openai/work",
            "PLAIN": "visible",
        },
    )
    wait_step(created["job_id"], "ready")

    assert getenv(api, created["session_id"], "HF_TOKEN") == HF_TOKEN
    assert getenv(api, created["session_id"], "OPENAI_API_KEY") == WORK_KEY
    assert getenv(api, created["session_id"], "PLAIN") == "visible"
    assert getenv(api, created["session_id"], "MATRIXCLOUD_SECRET_KEY") == "<unset>"

    reads = AuditEvent.objects.filter(action="provider.credential.read").order_by("seq")
    assert sorted((e.target, e.meta["label"], e.meta["purpose"]) for e in reads) == [
        ("huggingface", "default", "sandbox.env"),
        ("openai", "work", "sandbox.env"),
    ]
    job = Job.objects.get(pk=created["job_id"])
    stored = repr(list(AuditEvent.objects.values())) + repr(list(JobEvent.objects.values()))
    stored += repr(job.payload) + repr(SandboxSession.objects.get(pk=created["session_id"]).env)
    assert HF_TOKEN not in stored
    assert WORK_KEY not in stored
    # Metered: one start, and the four calls once the host's recorder has written them.
    assert wait_for(
        lambda: usage_summary(workspace=workspace).get("tool.call") == 4, 10, "4 metered calls"
    )
    assert usage_summary(workspace=workspace)["sandbox.start"] == 1


def test_an_unknown_provider_label_fails_the_start_clearly(api: Any) -> None:
    provider_upsert(provider="openai", secret=WORK_KEY, actor=actor_of(local_workspace(), name="t"))
    created = create(api, {"OPENAI_API_KEY": "${secret:openai/missing}"})
    job = terminal(created["job_id"])
    assert job.status == "error"
    assert job.error == 'env "OPENAI_API_KEY" refers to an unknown secret "openai/missing"'
    assert ("sandbox", "start") not in steps(job.pk)


def test_an_unreadable_secret_fails_the_start_without_leaking(api: Any) -> None:
    from django.db import connection

    from matrixcloud.lib import crypto

    credential = provider_upsert(
        provider="huggingface", secret=HF_TOKEN, actor=actor_of(local_workspace(), name="t")
    )
    foreign = crypto._ring_for(("ee" * 32,)).encrypt(HF_TOKEN)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_providercredential SET secret = %s WHERE id = %s",
            [foreign, credential.pk],
        )
    created = create(api, {"HF_TOKEN": "${secret:huggingface}"})
    job = terminal(created["job_id"])
    assert job.status == "error"
    assert job.error.startswith("the huggingface/default credential cannot be decrypted")
    assert HF_TOKEN not in job.error
    failed = AuditEvent.objects.get(action="provider.credential.read")
    assert failed.status == "failure"


# --- by role ---------------------------------------------------------------------------------


def test_a_members_sandbox_gets_the_owners_key_only_once_it_is_marked(api: Any) -> None:
    """The attack (a Member's session naming the Owner's key) against a real host:
    refused (403, audited) and no sandbox; once the Owner marks the key usable by members,
    the value arrives."""
    owner, workspace, owner_token = signup("Olga Owner", "olga@secrets.test", "Secrets")
    member = join(workspace, owner, name="Max Member", email="max@secrets.test")
    member_token = issue(member)
    credential = provider_upsert(
        provider="openai", secret=WORK_KEY, actor=actor_of(workspace, name=str(owner.pk))
    )
    body = {"start_command": python_server("env_server.py"),
            "env": {"OPENAI_API_KEY": "${secret:openai}"}}  # fmt: skip

    refused = api.post(SESSIONS, body, **bearer(member_token))
    assert refused.status_code == 403
    assert "the openai/default credential is not usable by members" in refused.json()["error"]
    assert not SandboxSession.objects.exists()
    audited = AuditEvent.objects.get(action="provider.credential.refused")
    assert (audited.actor, audited.status, audited.target) == (member.pk, "failure", "openai")

    marked = api.patch(f"/v1/cloud/providers/{credential.pk}", {"usable_by_members": True},
                       **bearer(owner_token))  # fmt: skip
    assert marked.status_code == 200
    allowed = api.post(SESSIONS, body, **bearer(member_token))
    assert allowed.status_code == 202, allowed.content
    created = allowed.json()
    wait_step(created["job_id"], "ready")
    call = {"name": "getenv", "arguments": {"name": "OPENAI_API_KEY"}}
    answer = api.post(f"{SESSIONS}/{created['session_id']}/tools/call", call,
                      **bearer(member_token))  # fmt: skip
    assert answer.json()["result"]["content"][0]["text"] == WORK_KEY
    read = AuditEvent.objects.get(action="provider.credential.read")
    assert (read.actor, read.status, read.meta["purpose"]) == (member.pk, "success", "sandbox.env")


def test_the_host_checks_the_creators_role_when_it_starts(api: Any) -> None:
    """An Admin's session, created while they were Admin, demoted to Member before the
    host resolved the secret (in the creating transaction, so before any host saw the
    job): the start fails naming the credential, the server never gets the key."""
    owner, workspace, _ = signup("Olga Owner", "olga@start.test", "Start")
    admin = join(workspace, owner, name="Ada Admin", email="ada@start.test", role="Admin")
    provider_upsert(
        provider="openai", secret=WORK_KEY, actor=actor_of(workspace, name=str(owner.pk))
    )
    with transaction.atomic():
        session = sandbox_create(
            start_command=python_server("env_server.py"),
            env={"OPENAI_API_KEY": "${secret:openai}"},
            ttl_seconds=60,
            actor=actor_of(workspace, admin),
        )
        Membership.objects.filter(user=admin, workspace=workspace).update(role="Member")
    job = terminal(session.job_id)
    assert job.status == "error"
    assert job.error.startswith("the openai/default credential is not usable by members")
    assert ("mcp_start", "start") not in steps(job.pk)
    refused = AuditEvent.objects.get(action="provider.credential.refused")
    assert (refused.actor, refused.meta["purpose"]) == (admin.pk, "sandbox.env")
    assert not AuditEvent.objects.filter(action="provider.credential.read").exists()
    assert WORK_KEY not in job.error
