"""Operators' tools for accounts: admin pages, the revoke action, audit_verify."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from accounts.audit import audit_record
from accounts.models import AuditEvent, SessionToken, User
from accounts.services import user_signup

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    operator = User.objects.create_superuser(email="op@example.com", password="op-password-1")
    client.force_login(operator)
    return client


@pytest.fixture
def issued():
    return user_signup(name="Ada", email="ada@example.com", password="a long passphrase 1")


@pytest.mark.parametrize(
    "model",
    [
        "workspace",
        "sessiontoken",
        "invitation",
        "passwordreset",
        "emailverification",
        "auditevent",
        "user",
    ],
)
def test_changelists_load(operator_client, issued, model):
    response = operator_client.get(reverse(f"admin:accounts_{model}_changelist"))
    assert response.status_code == 200


def test_session_page_never_shows_a_token(operator_client, issued):
    response = operator_client.get(
        reverse("admin:accounts_sessiontoken_change", args=[quote(issued.session.pk)])
    )
    assert response.status_code == 200
    assert issued.token.encode() not in response.content


def test_revoke_action_ends_sessions(operator_client, issued):
    response = operator_client.post(
        reverse("admin:accounts_sessiontoken_changelist"),
        {"action": "revoke", "_selected_action": [issued.session.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert SessionToken.objects.get(pk=issued.session.pk).revoked_at is not None


def test_audit_rows_cannot_be_edited_in_admin(operator_client, issued):
    event = AuditEvent.objects.first()
    assert event is not None
    url = reverse("admin:accounts_auditevent_change", args=[event.pk])
    operator_client.post(url, {"action": "tampered"})
    event.refresh_from_db()
    assert event.action != "tampered"


def test_audit_verify_command_passes_then_detects_tampering(issued, capsys):
    audit_record(action="test.one", actor="operator")
    call_command("audit_verify")
    assert "audit chain intact: 2 events" in capsys.readouterr().out
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_auditevent SET target = %s WHERE action = %s", ["x", "test.one"]
        )
    with pytest.raises(CommandError, match="content does not match"):
        call_command("audit_verify")
