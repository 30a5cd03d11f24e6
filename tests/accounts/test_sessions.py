"""Session tokens: stored hashed, ended by logout and logout-all, idle and absolute expiry."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection

from accounts.models import (
    AuditEvent,
    EmailVerification,
    Invitation,
    OutboxEmail,
    PasswordReset,
    SessionToken,
)
from accounts.services import invitation_create
from accounts.services.passwords import password_reset_issue
from tests import factories
from tests.factories import PASSWORD, actor_of, bearer, error, issue, token_in

pytestmark = pytest.mark.django_db

cast = factories.cast
clock = factories.clock

HEX64 = re.compile(r"[0-9a-f]{64}")
OK = {"ok": True}


def me(api: Any, token: str) -> int:
    return api.get("/v1/auth/me", **bearer(token)).status_code


def raw_rows(table: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
        return list(cursor.fetchall())


def hex64_values(rows: list[tuple[Any, ...]]) -> set[str]:
    return {found for row in rows for value in row for found in HEX64.findall(str(value))}


# --- what the database holds --------------------------------------------------------


def test_the_session_table_holds_only_the_hash_of_the_token(api, cast):
    response = api.post("/v1/auth/login", {"email": "member@northwind.test", "password": PASSWORD})
    token = response.json()["token"]
    secret_part = token.partition("_")[2]
    digest = hashlib.sha256(token.encode()).hexdigest()

    rows = raw_rows(SessionToken._meta.db_table)

    assert rows, "no session rows"
    flat = [str(value) for row in rows for value in row]
    assert not any(token in value or secret_part in value for value in flat)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT token_hash FROM accounts_sessiontoken WHERE user_id = %s ORDER BY created_at",
            [cast.member.pk],
        )
        stored = [row[0] for row in cursor.fetchall()]
    assert digest in stored
    # Every 64-hex value in the table is some session's hash, never a token body.
    assert hex64_values(rows) == {row[0] for row in SessionToken.objects.values_list("token_hash")}
    assert secret_part not in hex64_values(rows)
    assert me(api, token) == 200


def test_one_time_token_tables_hold_only_hashes(api, cast, django_capture_on_commit_callbacks):
    from django.core import mail

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        password_reset_issue(email="member@northwind.test")  # the worker's step: mails at once
        _, invite_secret = invitation_create(
            email="guest@example.com", actor=actor_of(cast.workspace, cast.owner)
        )
    assert len(callbacks) == 1  # the invitation's wake: its email waits in the outbox
    [reset_mail] = mail.outbox  # the reset link is made and sent, never stored
    reset_body = token_in(reset_mail.body, "mxpr").partition("_")[2]
    invite_body = invite_secret.partition("_")[2]
    for model in (PasswordReset, EmailVerification, Invitation):
        rows = raw_rows(model._meta.db_table)
        assert rows
        assert {invite_body, reset_body}.isdisjoint(hex64_values(rows))
        assert hex64_values(rows) <= set(model.objects.values_list("token_hash", flat=True))
    invitation = Invitation.objects.get(email="guest@example.com")
    assert invitation.token_hash == hashlib.sha256(invite_secret.encode()).hexdigest()
    # The outbox holds the invitation's secret encrypted, and no reset secret at all.
    stored = repr(raw_rows(OutboxEmail._meta.db_table))
    assert "guest@example.com" in stored
    assert invite_body not in stored
    assert reset_body not in stored
    assert OutboxEmail.objects.get(to="guest@example.com").secret == invite_secret


# --- logout -------------------------------------------------------------------------


def test_logout_ends_only_the_presented_session(api, cast):
    first, second = issue(cast.member), issue(cast.member)
    owners = issue(cast.owner)

    response = api.post("/v1/auth/logout", {}, **bearer(first))

    assert response.status_code == 200
    assert response.json() == OK
    assert me(api, first) == 401
    assert (me(api, second), me(api, owners)) == (200, 200)
    ended = SessionToken.objects.get(token_hash=hashlib.sha256(first.encode()).hexdigest())
    assert ended.revoked_at is not None
    assert AuditEvent.objects.filter(
        action="user.logout", actor=cast.member.pk, meta={"all": False, "sessions": 1}
    ).exists()


@pytest.mark.parametrize("query", ["all=true", "all=True"])
def test_logout_all_ends_every_session_of_the_user(api, cast, query):
    tokens = [issue(cast.member) for _ in range(3)]
    others = [issue(cast.owner), issue(cast.outsider)]

    response = api.post(f"/v1/auth/logout?{query}", {}, **bearer(tokens[0]))

    assert response.status_code == 200
    assert response.json() == OK
    assert [me(api, token) for token in tokens] == [401, 401, 401]
    assert [me(api, token) for token in others] == [200, 200]
    assert not SessionToken.objects.filter(user=cast.member, revoked_at__isnull=True).exists()


def test_logout_without_all_true_keeps_the_others(api, cast):
    tokens = [issue(cast.member), issue(cast.member)]
    api.post("/v1/auth/logout?all=false", {}, **bearer(tokens[0]))
    assert [me(api, token) for token in tokens] == [401, 200]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("garbage"),
        bearer("mxs_" + "4" * 64),
        {"HTTP_AUTHORIZATION": "Basic Zm9vOmJhcg=="},
    ],
)
def test_logout_always_answers_ok(api, cast, headers):
    survivor = issue(cast.member)
    for path in ("/v1/auth/logout", "/v1/auth/logout?all=true"):
        response = api.post(path, {}, **headers)
        assert response.status_code == 200
        assert response.json() == OK
    assert me(api, survivor) == 200


def test_logout_with_the_operator_token_ends_nothing(api, cast, settings):
    settings.MATRIX_API_TOKEN = "operator-token-for-session-tests-0123"
    survivor = issue(cast.member)
    response = api.post("/v1/auth/logout?all=true", {}, **bearer(settings.MATRIX_API_TOKEN))
    assert (response.status_code, response.json()) == (200, OK)
    assert me(api, survivor) == 200


def test_a_revoked_session_does_not_pass_the_gate(api, cast):
    token = issue(cast.member)
    assert api.get("/v1/auth/members", **bearer(token)).status_code == 200
    api.post("/v1/auth/logout", {}, **bearer(token))
    response = api.get("/v1/auth/members", **bearer(token))
    assert response.status_code == 401
    assert response.json() == error("missing or invalid bearer token", 401)


def test_a_deactivated_users_sessions_stop_working(api, cast):
    token = issue(cast.member)
    type(cast.member).objects.filter(pk=cast.member.pk).update(is_active=False)
    assert me(api, token) == 401


# --- expiry with a frozen clock -----------------------------------------------------


@pytest.fixture
def short_sessions(settings: Any) -> None:
    settings.SESSION_TOKEN_IDLE_HOURS = 2
    settings.SESSION_TOKEN_MAX_AGE_DAYS = 1


def test_an_idle_session_expires(api, cast, clock, short_sessions):
    token = issue(cast.member)
    clock.advance(hours=2, seconds=-1)
    fresh = issue(cast.member)
    clock.advance(seconds=2)  # the first token has now been idle for 2 h + 1 s

    response = api.get("/v1/auth/me", **bearer(token))
    assert response.status_code == 401
    assert response.json() == error("not authenticated", 401)
    assert me(api, fresh) == 200


def test_use_within_the_idle_window_extends_it(api, cast, clock, short_sessions):
    start = clock.now
    token = issue(cast.member)
    clock.advance(hours=1, minutes=59)
    assert me(api, token) == 200
    row = SessionToken.objects.get(token_hash=hashlib.sha256(token.encode()).hexdigest())
    assert row.last_used_at == clock.now
    assert row.idle_expires_at == clock.now + timedelta(hours=2)

    clock.advance(hours=1, minutes=1)
    assert clock.now - start == timedelta(hours=3)  # past the first idle window
    assert me(api, token) == 200
    clock.advance(hours=2, seconds=1)  # then unused for longer than the window
    assert me(api, token) == 401


def test_touch_writes_a_use_at_most_once_a_minute(cast, clock, short_sessions):
    token = issue(cast.member)
    row = SessionToken.objects.get(token_hash=hashlib.sha256(token.encode()).hexdigest())
    start = row.last_used_at
    clock.advance(seconds=60)
    row.touch(clock.now)  # a minute, not more: nothing written
    stored = SessionToken.objects.get(pk=row.pk)
    assert (row.last_used_at, stored.last_used_at) == (start, start)

    clock.advance(seconds=1)
    row.touch(clock.now)
    stored = SessionToken.objects.get(pk=row.pk)
    extended = (clock.now, clock.now + timedelta(hours=2))
    assert (stored.last_used_at, stored.idle_expires_at) == extended
    assert (row.last_used_at, row.idle_expires_at) == extended


def test_a_session_ends_at_its_absolute_age_however_busy(api, cast, clock, short_sessions):
    start = clock.now
    token = issue(cast.member)
    while clock.now + timedelta(minutes=90) < start + timedelta(days=1):
        clock.advance(minutes=90)  # used every 90 minutes: never idle for 2 hours
        assert me(api, token) == 200
    clock.now = start + timedelta(days=1, seconds=-1)
    assert me(api, token) == 200
    clock.now = start + timedelta(days=1)  # used a second ago, but a day old
    assert me(api, token) == 401
    assert SessionToken.objects.get(user=cast.member, created_at=start).revoked_at is None
