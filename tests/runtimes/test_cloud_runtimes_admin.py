"""Operators' admin pages for join tokens and registered runtimes: lists and change pages
load, secrets and hashes are never shown, and the actions go through the services."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from accounts.models import AuditEvent, User
from accounts.services import user_signup
from runtimes.models import JoinToken, Runtime
from runtimes.services import join_token_issue, runtime_register
from tests.factories import actor_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    operator = User.objects.create_superuser(email="op@example.com", password="op-password-1")
    client.force_login(operator)
    client.operator = operator
    return client


@pytest.fixture
def joined():
    issued = user_signup(name="Ada", email="ada@example.com", password="a long passphrase 1")
    minted = join_token_issue(
        max_uses=3, actor=actor_of(issued.membership.workspace, name=str(issued.membership.user.pk))
    )
    runtime = runtime_register(join_token=minted.secret, name="gpu-box", caps=["mcp.test"])
    return minted, runtime


@pytest.mark.parametrize(
    "model", ["runtimes_jointoken", "runtimes_runtime", "jobs_processheartbeat"]
)
def test_changelists_load(operator_client, joined, model):
    response = operator_client.get(reverse(f"admin:{model}_changelist"))
    assert response.status_code == 200


def test_change_pages_never_show_secrets_or_hashes(operator_client, joined):
    minted, registered = joined
    token_page = operator_client.get(
        reverse("admin:runtimes_jointoken_change", args=[quote(minted.token.pk)])
    )
    runtime_page = operator_client.get(
        reverse("admin:runtimes_runtime_change", args=[quote(registered.runtime.pk)])
    )
    assert token_page.status_code == runtime_page.status_code == 200
    assert b"gpu-box" in runtime_page.content
    for page in (token_page, runtime_page):
        for secret in (minted.secret, minted.token.token_hash, registered.token):
            assert secret.encode() not in page.content
        assert registered.runtime.token_hash.encode() not in page.content


def test_the_admin_adds_nothing(operator_client, joined):
    for model in ("jointoken", "runtime"):
        assert operator_client.get(reverse(f"admin:runtimes_{model}_add")).status_code == 403


def test_revoke_action_revokes_join_tokens_through_the_service(operator_client, joined):
    minted, _ = joined
    response = operator_client.post(
        reverse("admin:runtimes_jointoken_changelist"),
        {"action": "revoke", "_selected_action": [minted.token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Revoked 1 join token(s)." in response.content
    assert JoinToken.objects.get(pk=minted.token.pk).revoked
    event = AuditEvent.objects.get(action="runtime.join_token.revoked")
    assert event.actor == operator_client.operator.pk


def test_runtime_actions_revoke_tokens_and_remove(operator_client, joined):
    _, registered = joined
    changelist = reverse("admin:runtimes_runtime_changelist")
    selected = [registered.runtime.pk]
    operator_client.post(changelist, {"action": "revoke_tokens", "_selected_action": selected})
    assert Runtime.objects.get(pk=registered.runtime.pk).token_revoked
    response = operator_client.post(
        changelist, {"action": "remove", "_selected_action": selected}, follow=True
    )
    assert b"Removed 1 runtime(s)." in response.content
    assert not Runtime.objects.exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"runtime.token.revoked", "runtime.removed"} <= actions
