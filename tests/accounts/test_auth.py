"""/v1/auth: signup, login, me, forgot/reset, verify, invitations, members; the original's
password hashes; enumeration resistance of forgot."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.hashers import check_password
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.emails import RESET_REQUEST
from accounts.models import (
    AuditEvent,
    EmailVerification,
    Invitation,
    Membership,
    OutboxEmail,
    PasswordReset,
    SessionToken,
    User,
)
from accounts.outbox import outbox_deliver
from accounts.services import invitation_create, workspace_slug_base
from matrixcloud.lib.tokens import secret_hash
from tests import factories
from tests.factories import PASSWORD, actor_of, bearer, error, issue, token_in

pytestmark = pytest.mark.django_db

cast = factories.cast
clock = factories.clock
outbox = factories.outbox

OPERATOR_TOKEN = "operator-token-for-auth-tests-0123456789"
FORGOT_BODY = {
    "ok": True,
    "message": "If an account exists for that email, a reset link is on its way.",
}
RESET_BODY = {"ok": True, "message": "Your password has been updated. Please sign in."}
NEW_PASSWORD = "quartz meadow falcon 97"


def payload(user: User, workspace: Any, role: str) -> dict[str, Any]:
    user.refresh_from_db()
    return {
        "id": user.pk,
        "name": user.name,
        "email": user.email,
        "role": role,
        "workspace": workspace.name,
        "workspace_slug": workspace.slug,
        "workspace_id": workspace.pk,
        "email_verified": user.email_verified_at is not None,
    }


def is_session_token(token: str) -> bool:
    prefix, _, body = token.partition("_")
    return prefix == "mxs" and len(body) == 64 and all(c in "0123456789abcdef" for c in body)


def pending() -> Any:
    """Invitations made by the test (the cast's own were accepted when it was built)."""
    return Invitation.objects.filter(accepted_at__isnull=True)


def pending_or_accepted() -> Invitation:
    """The one invitation the test made, whether or not it was accepted since."""
    return Invitation.objects.exclude(email__endswith="@northwind.test").get()


@pytest.fixture
def operator_configured(settings: Any) -> None:
    """An operator token is set, so anonymous loopback callers are no longer the operator."""
    settings.MATRIX_API_TOKEN = OPERATOR_TOKEN


# --- signup -------------------------------------------------------------------------


def test_signup_creates_owner_workspace_session_and_mails_verification(
    api, outbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/v1/auth/signup",
            {"name": " Maya Chen ", "email": "Maya.Chen@Example.COM", "password": PASSWORD},
        )

    assert response.status_code == 201
    body = response.json()
    user = User.objects.get(email="maya.chen@example.com")
    membership = Membership.objects.select_related("workspace").get(user=user)
    assert set(body) == {"token", "user"}
    assert is_session_token(body["token"])
    assert body["user"] == {
        "id": user.pk,
        "name": "Maya Chen",
        "email": "maya.chen@example.com",
        "role": "Owner",
        "workspace": "Maya Chen's workspace",
        "workspace_slug": "maya-chen-s-workspace",
        "workspace_id": membership.workspace_id,
        "email_verified": False,
    }
    assert membership.role == "Owner"
    assert user.password.startswith("argon2$argon2id$")
    assert PASSWORD not in user.password
    assert user.check_password(PASSWORD)
    assert api.get("/v1/auth/me", **bearer(body["token"])).json()["user"] == body["user"]
    assert AuditEvent.objects.filter(
        action="user.signup", actor=user.pk, workspace_id=membership.workspace_id
    ).exists()
    # The welcome email carries a working verification link.
    assert [m.to for m in outbox] == [["maya.chen@example.com"]]
    secret = token_in(outbox[0].body, "mxev")
    assert f"{django_settings.MATRIX_PUBLIC_URL}/verify?token={secret}" in outbox[0].body
    assert api.post("/v1/auth/verify", {"token": secret}).json() == {
        "ok": True,
        "message": "Email verified.",
    }
    assert User.objects.get(pk=user.pk).email_verified_at is not None


def test_signup_slugs_follow_the_original(api):
    first = api.post(
        "/v1/auth/signup",
        {"name": "Ann", "email": "ann@acme.test", "password": PASSWORD, "workspace": "Acme"},
    )
    second = api.post(
        "/v1/auth/signup",
        {"name": "Bob", "email": "bob@acme.test", "password": PASSWORD, "workspace": "Acme"},
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["user"]["workspace_slug"] == "acme"
    assert second.json()["user"]["workspace_slug"] == "acme-1"
    assert second.json()["user"]["workspace"] == "Acme"
    assert first.json()["user"]["workspace_id"] != second.json()["user"]["workspace_id"]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Acme", "acme"),
        ("Maya Chen's workspace", "maya-chen-s-workspace"),
        ("  --Hello,  World!!  ", "hello-world"),
        ("Ünïcode Ltd.", "n-code-ltd"),
        ("!!!", "workspace"),
    ],
)
def test_workspace_slug_base(name, slug):
    assert workspace_slug_base(name) == slug


def test_signup_taken_email_is_409_case_insensitively(api, cast):
    response = api.post(
        "/v1/auth/signup",
        {"name": "Again", "email": "  OWNER@Northwind.TEST ", "password": PASSWORD},
    )
    assert response.status_code == 409
    assert response.json() == error("an account with this email already exists", 409)
    assert User.objects.filter(email__iexact="owner@northwind.test").count() == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": "M", "email": "not-an-email", "password": PASSWORD},
            "email: Enter a valid email address.",
        ),
        (
            {"name": "M", "email": "m@x.test", "password": "short"},
            "password: Ensure this field has at least 6 characters.",
        ),
        (
            {"name": "M", "email": "m@x.test", "password": "x7#kq2L"},
            "This password is too short. It must contain at least 8 characters.",
        ),
        (
            {"name": "M", "email": "m@x.test", "password": "password123"},
            "This password is too common.",
        ),
        (
            {"name": "Maya", "email": "maya.chen@x.test", "password": "maya.chen@x.test"},
            "The password is too similar to the email.",
        ),
        (
            {"name": "   ", "email": "m@x.test", "password": PASSWORD},
            "name: This field may not be blank.",
        ),
        ({"email": "m@x.test", "password": PASSWORD}, "name: This field is required."),
        (
            {"name": "N" * 201, "email": "m@x.test", "password": PASSWORD},
            "name must be at most 200 characters",
        ),
    ],
)
def test_signup_bad_input_is_400(api, body, message):
    response = api.post("/v1/auth/signup", body)
    assert response.status_code == 400
    assert response.json() == error(message, 400)
    assert not User.objects.filter(email__in=["m@x.test", "maya.chen@x.test"]).exists()


def test_signup_invalid_json_is_400(api):
    try:
        json.loads("{nope")
    except ValueError as exc:
        reason = str(exc)
    response = api.post("/v1/auth/signup", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == error(f"invalid JSON body: {reason}", 400)


# --- login --------------------------------------------------------------------------


def test_login_starts_a_new_session_each_time(api, cast):
    first = api.post(
        "/v1/auth/login", {"email": "  MEMBER@Northwind.test ", "password": cast.password}
    )
    second = api.post("/v1/auth/login", {"email": "member@northwind.test", "password": PASSWORD})

    assert (first.status_code, second.status_code) == (200, 200)
    expected = payload(cast.member, cast.workspace, "Member")
    assert first.json() == {"token": first.json()["token"], "user": expected}
    assert first.json()["token"] != second.json()["token"]
    for token in (first.json()["token"], second.json()["token"]):
        assert is_session_token(token)
        assert api.get("/v1/auth/me", **bearer(token)).json() == {"user": expected}
    cast.member.refresh_from_db()
    assert cast.member.last_login is not None
    assert (
        AuditEvent.objects.filter(
            action="user.login", status="success", actor=cast.member.pk, workspace=cast.workspace
        ).count()
        == 2
    )


def test_wrong_password_and_unknown_email_answer_alike_and_are_audited(api, cast):
    sessions_before = SessionToken.objects.filter(user=cast.member).count()
    wrong = api.post(
        "/v1/auth/login", {"email": "Member@northwind.test", "password": "not the password"}
    )
    unknown = api.post("/v1/auth/login", {"email": "ghost@northwind.test", "password": PASSWORD})

    assert (wrong.status_code, unknown.status_code) == (401, 401)
    assert wrong.json() == unknown.json() == error("invalid email or password", 401)
    assert wrong.content == unknown.content
    assert SessionToken.objects.filter(user=cast.member).count() == sessions_before
    known = AuditEvent.objects.get(
        action="user.login", status="failure", target__iexact="member@northwind.test"
    )
    assert known.workspace_id == cast.workspace.pk
    assert known.actor == "member@northwind.test"
    assert known.target == "Member@northwind.test"
    assert known.ip == "127.0.0.1"
    ghost = AuditEvent.objects.get(
        action="user.login", status="failure", actor="ghost@northwind.test"
    )
    assert ghost.workspace_id is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"email": "member@northwind.test"}, "password: This field is required."),
        ({"password": PASSWORD}, "email: This field is required."),
        ({"email": "nope", "password": PASSWORD}, "email: Enter a valid email address."),
    ],
)
def test_login_bad_input_is_400(api, body, message):
    response = api.post("/v1/auth/login", body)
    assert response.status_code == 400
    assert response.json() == error(message, 400)


# --- the original's password hashes -------------------------------------------------


def go_hash(password: str, iterations: int = 120_000) -> str:
    """What matrix-runtime stored: pbkdf2$iter$salthex$keyhex (PBKDF2-HMAC-SHA256)."""
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, 32)
    return f"pbkdf2${iterations}${salt.hex()}${key.hex()}"


def test_original_hash_logs_in_and_is_upgraded_to_argon2(api, cast):
    original = go_hash("imported passphrase 55")
    _, iterations, salt, key = original.split("$")
    assert (iterations, len(salt), len(key)) == ("120000", 32, 64)
    User.objects.filter(pk=cast.member.pk).update(password=original)

    wrong = api.post(
        "/v1/auth/login", {"email": "member@northwind.test", "password": "imported passphrase 56"}
    )
    assert wrong.status_code == 401
    assert User.objects.get(pk=cast.member.pk).password == original

    right = api.post(
        "/v1/auth/login", {"email": "member@northwind.test", "password": "imported passphrase 55"}
    )
    assert right.status_code == 200
    upgraded = User.objects.get(pk=cast.member.pk).password
    assert upgraded.startswith("argon2$argon2id$")
    assert check_password("imported passphrase 55", upgraded)


@pytest.mark.parametrize(
    "broken",
    [
        "pbkdf2$0$" + "ab" * 16 + "$" + "cd" * 32,  # zero iterations
        "pbkdf2$-5$" + "ab" * 16 + "$" + "cd" * 32,  # negative iterations
        "pbkdf2$999999999$" + "ab" * 16 + "$" + "cd" * 32,  # a CPU bomb, not a hash
        "pbkdf2$120000$" + "ab" * 16 + "$",  # empty key
        "pbkdf2$many$" + "ab" * 16 + "$" + "cd" * 32,  # iterations not a number
        "pbkdf2$120000$not-hex$" + "cd" * 32,  # salt not hex
        "pbkdf2$120000$" + "ab" * 16,  # too few parts
    ],
)
def test_malformed_original_hash_is_a_wrong_password(api, cast, broken):
    User.objects.filter(pk=cast.member.pk).update(password=broken)
    response = api.post("/v1/auth/login", {"email": "member@northwind.test", "password": "x" * 9})
    assert response.status_code == 401
    assert response.json() == error("invalid email or password", 401)


# --- me -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_me_returns_the_session_user_whatever_the_scheme_case(api, cast, scheme):
    token = issue(cast.admin)
    response = api.get("/v1/auth/me", **bearer(token, scheme))
    assert response.status_code == 200
    assert response.json() == {"user": payload(cast.admin, cast.workspace, "Admin")}


def test_me_is_401_for_anonymous_local_dev_caller(api, settings):
    assert settings.MATRIX_MODE == "local-dev"
    assert not settings.MATRIX_API_TOKEN
    response = api.get("/v1/auth/me")
    assert response.status_code == 401
    assert response.json() == error("not authenticated", 401)


def test_me_is_401_for_the_operator_token_and_garbage(api, operator_configured):
    for token in (OPERATOR_TOKEN, "mxs_" + "0" * 64, "garbage"):
        response = api.get("/v1/auth/me", **bearer(token))
        assert response.status_code == 401
        assert response.json() == error("not authenticated", 401)


# --- forgot and reset ---------------------------------------------------------------


def forgot(api: Any, email: str, capture: Any) -> Any:
    with capture(execute=True):
        return api.post("/v1/auth/forgot", {"email": email})


def test_forgot_known_email_mails_a_single_use_link(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    response = forgot(api, " Member@Northwind.TEST ", django_capture_on_commit_callbacks)

    assert response.status_code == 200
    assert response.json() == FORGOT_BODY
    assert len(outbox) == 1
    assert outbox[0].to == ["member@northwind.test"]
    assert outbox[0].subject == "Reset your MatrixCloud password"
    secret = token_in(outbox[0].body, "mxpr")
    assert f"{django_settings.MATRIX_PUBLIC_URL}/reset?token={secret}" in outbox[0].body
    reset = PasswordReset.objects.get(user=cast.member)
    assert reset.token_hash == secret_hash(secret)
    assert reset.used_at is None
    assert 3590 < (reset.expires_at - reset.created_at).total_seconds() <= 3600


def test_forgot_unknown_email_answers_the_same_and_mails_nothing(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    known = forgot(api, "member@northwind.test", django_capture_on_commit_callbacks)
    unknown = forgot(api, "nobody@northwind.test", django_capture_on_commit_callbacks)

    assert unknown.status_code == known.status_code == 200
    assert unknown.content == known.content
    assert unknown.json() == FORGOT_BODY
    assert [m.to for m in outbox] == [["member@northwind.test"]]
    assert PasswordReset.objects.count() == 1


def test_forgot_takes_about_the_same_time_for_known_and_unknown_emails(
    api, cast, django_capture_on_commit_callbacks
):
    """Enumeration by timing: medians of 20 tries each differ by under 50 ms."""
    forgot(api, "owner@northwind.test", django_capture_on_commit_callbacks)  # warm up
    forgot(api, "warmup@northwind.test", django_capture_on_commit_callbacks)
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for i in range(20):
        for kind, email in (("known", "member@northwind.test"), ("unknown", f"x{i}@nope.test")):
            started = time.perf_counter()
            response = forgot(api, email, django_capture_on_commit_callbacks)
            timings[kind].append(time.perf_counter() - started)
            assert response.status_code == 200
    # Both paths did the same work: one outbox row each (and the warm-ups').
    assert list(OutboxEmail.objects.values_list("kind", flat=True)) == [RESET_REQUEST] * 42
    # What the worker then does with them: links for the known address only.
    assert outbox_deliver() == 42
    assert PasswordReset.objects.filter(user=cast.member).count() == 20
    known, unknown = statistics.median(timings["known"]), statistics.median(timings["unknown"])
    print(f"forgot medians: known {known * 1000:.2f} ms, unknown {unknown * 1000:.2f} ms")
    assert abs(known - unknown) < 0.050


def test_forgot_queues_the_email_without_a_usable_token(
    api, cast, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    from django.core import mail

    forgot(api, "member@northwind.test", django_capture_on_commit_callbacks)

    [delivery] = OutboxEmail.objects.all()
    assert (delivery.kind, delivery.to, delivery.ip) == (
        RESET_REQUEST,
        "member@northwind.test",
        "127.0.0.1",
    )
    assert delivery.secret == ""  # the link is made when the worker delivers the row
    stored = list(OutboxEmail.objects.values_list("secret", flat=True))
    assert outbox_deliver() == 1  # what the worker does with it: make the link, mail it
    secret = token_in(mail.outbox[0].body, "mxpr")
    body = secret.partition("_")[2]
    assert body not in repr(stored)
    assert not OutboxEmail.objects.exists()  # sent: nothing of it is kept
    assert PasswordReset.objects.get(user=cast.member).token_hash == secret_hash(secret)


def test_forgot_bad_input_is_400(api):
    response = api.post("/v1/auth/forgot", {})
    assert response.status_code == 400
    assert response.json() == error("email: This field is required.", 400)


def mailed_reset(api: Any, email: str, outbox: list[Any], capture: Any) -> str:
    before = len(outbox)
    forgot(api, email, capture)
    assert len(outbox) == before + 1
    return token_in(outbox[-1].body, "mxpr")


def test_reset_sets_the_password_once_and_ends_every_session(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    sessions = [issue(cast.member), issue(cast.member)]
    secret = mailed_reset(api, "member@northwind.test", outbox, django_capture_on_commit_callbacks)

    response = api.post("/v1/auth/reset", {"token": secret, "password": NEW_PASSWORD})

    assert response.status_code == 200
    assert response.json() == RESET_BODY
    for token in sessions:
        assert api.get("/v1/auth/me", **bearer(token)).status_code == 401
    assert not SessionToken.objects.usable(timezone.now()).filter(user=cast.member)
    again = api.post("/v1/auth/reset", {"token": secret, "password": "another fine phrase 3"})
    assert again.status_code == 400
    assert again.json() == error("this reset link has already been used", 400)
    old = api.post("/v1/auth/login", {"email": "member@northwind.test", "password": PASSWORD})
    assert old.status_code == 401
    new = api.post("/v1/auth/login", {"email": "member@northwind.test", "password": NEW_PASSWORD})
    assert new.status_code == 200
    assert AuditEvent.objects.filter(
        action="user.password_reset.completed", actor=cast.member.pk
    ).exists()


def test_reset_link_expires_after_an_hour(
    api, cast, clock, outbox, django_capture_on_commit_callbacks
):
    secret = mailed_reset(api, "member@northwind.test", outbox, django_capture_on_commit_callbacks)
    before = User.objects.get(pk=cast.member.pk).password
    clock.advance(minutes=60, seconds=1)

    response = api.post("/v1/auth/reset", {"token": secret, "password": NEW_PASSWORD})

    assert response.status_code == 400
    assert response.json() == error("this reset link has expired", 400)
    assert User.objects.get(pk=cast.member.pk).password == before


def test_reset_link_works_until_the_hour_is_up(
    api, cast, clock, outbox, django_capture_on_commit_callbacks
):
    secret = mailed_reset(api, "member@northwind.test", outbox, django_capture_on_commit_callbacks)
    clock.advance(minutes=59, seconds=59)
    response = api.post("/v1/auth/reset", {"token": secret, "password": NEW_PASSWORD})
    assert response.status_code == 200


def test_a_newer_forgot_invalidates_the_older_link(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    older = mailed_reset(api, "member@northwind.test", outbox, django_capture_on_commit_callbacks)
    newer = mailed_reset(api, "member@northwind.test", outbox, django_capture_on_commit_callbacks)
    assert older != newer

    stale = api.post("/v1/auth/reset", {"token": older, "password": NEW_PASSWORD})
    assert stale.status_code == 400
    assert stale.json() == error("this reset link has expired", 400)
    fresh = api.post("/v1/auth/reset", {"token": newer, "password": NEW_PASSWORD})
    assert fresh.status_code == 200


def test_reset_rejects_a_weak_password_and_keeps_the_link(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    secret = mailed_reset(api, "member@northwind.test", outbox, django_capture_on_commit_callbacks)
    weak = api.post("/v1/auth/reset", {"token": secret, "password": "password123"})
    assert weak.status_code == 400
    assert weak.json() == error("This password is too common.", 400)
    assert PasswordReset.objects.get(user=cast.member).used_at is None
    assert (
        api.post("/v1/auth/reset", {"token": secret, "password": NEW_PASSWORD}).status_code == 200
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"token": "mxpr_" + "0" * 64, "password": NEW_PASSWORD}, "invalid or expired reset link"),
        (
            {"token": "mxpr_x", "password": "short"},
            "password: Ensure this field has at least 8 characters.",
        ),
        ({"password": NEW_PASSWORD}, "token: This field is required."),
    ],
)
def test_reset_bad_input_is_400(api, body, message):
    response = api.post("/v1/auth/reset", body)
    assert response.status_code == 400
    assert response.json() == error(message, 400)


# --- email verification -------------------------------------------------------------


def resend(api: Any, token: str, capture: Any) -> Any:
    with capture(execute=True):
        return api.post("/v1/auth/verify/resend", **bearer(token))


def test_resend_then_verify_marks_the_email_verified_idempotently(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    token = issue(cast.owner)
    assert cast.owner.email_verified_at is None

    sent = resend(api, token, django_capture_on_commit_callbacks)
    assert sent.status_code == 200
    assert sent.json() == {"ok": True, "message": "A new verification link is on its way."}
    assert [m.to for m in outbox] == [["owner@northwind.test"]]
    assert outbox[0].subject == "Welcome to MatrixCloud: verify your email"
    secret = token_in(outbox[0].body, "mxev")

    first = api.post("/v1/auth/verify", {"token": secret})
    second = api.post("/v1/auth/verify", {"token": f"  {secret} "})
    assert first.json() == second.json() == {"ok": True, "message": "Email verified."}
    assert (first.status_code, second.status_code) == (200, 200)
    verified_at = User.objects.get(pk=cast.owner.pk).email_verified_at
    assert verified_at is not None
    assert api.get("/v1/auth/me", **bearer(token)).json()["user"]["email_verified"] is True
    assert AuditEvent.objects.filter(action="user.email_verified", actor=cast.owner.pk).count() == 1

    again = resend(api, token, django_capture_on_commit_callbacks)
    assert again.json() == {"ok": True, "message": "Email already verified."}
    assert len(outbox) == 1
    assert User.objects.get(pk=cast.owner.pk).email_verified_at == verified_at


def test_verification_link_expires_after_a_day_and_a_resend_replaces_it(
    api, cast, clock, outbox, django_capture_on_commit_callbacks
):
    token = issue(cast.owner)
    resend(api, token, django_capture_on_commit_callbacks)
    older = token_in(outbox[-1].body, "mxev")
    resend(api, token, django_capture_on_commit_callbacks)
    newer = token_in(outbox[-1].body, "mxev")

    stale = api.post("/v1/auth/verify", {"token": older})
    assert stale.status_code == 400
    assert stale.json() == error("verification link expired", 400)

    clock.advance(hours=24, seconds=1)
    expired = api.post("/v1/auth/verify", {"token": newer})
    assert expired.status_code == 400
    assert expired.json() == error("verification link expired", 400)
    assert User.objects.get(pk=cast.owner.pk).email_verified_at is None
    assert not EmailVerification.objects.filter(user=cast.owner, used_at__isnull=False).exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"token": "mxev_" + "0" * 64}, "invalid verification link"),
        ({}, "token: This field is required."),
    ],
)
def test_verify_bad_input_is_400(api, body, message):
    response = api.post("/v1/auth/verify", body)
    assert response.status_code == 400
    assert response.json() == error(message, 400)


def test_resend_needs_a_session(api, operator_configured):
    for headers in ({}, bearer(OPERATOR_TOKEN), bearer("mxs_" + "1" * 64)):
        response = api.post("/v1/auth/verify/resend", **headers)
        assert response.status_code == 401
        assert response.json() == error("not authenticated", 401)


# --- invitations and members --------------------------------------------------------


def invite(api: Any, token: str, capture: Any, email: str, role: str | None = None) -> Any:
    body = {"email": email} if role is None else {"email": email, "role": role}
    with capture(execute=True):
        return api.post("/v1/auth/invitations", body, **bearer(token))


@pytest.mark.parametrize("inviter", ["owner", "admin"])
def test_owner_or_admin_invites_and_lists(
    api, cast, outbox, django_capture_on_commit_callbacks, inviter
):
    token = issue(getattr(cast, inviter))
    response = invite(
        api, token, django_capture_on_commit_callbacks, "New.Person@Example.com", "Admin"
    )

    assert response.status_code == 201
    invitation = pending_or_accepted()
    assert response.json() == {
        "invitation": {
            "id": invitation.pk,
            "email": "new.person@example.com",
            "role": "Admin",
            "workspace_id": cast.workspace.pk,
            "created_at": response.json()["invitation"]["created_at"],
            "expires_at": response.json()["invitation"]["expires_at"],
            "accepted_at": None,
        }
    }
    assert invitation.invited_by == getattr(cast, inviter)
    assert [m.to for m in outbox] == [["new.person@example.com"]]
    secret = token_in(outbox[0].body, "mxin")
    assert f"{django_settings.MATRIX_PUBLIC_URL}/invite?token={secret}" in outbox[0].body
    assert invitation.token_hash == secret_hash(secret)

    listed = api.get("/v1/auth/invitations", **bearer(token))
    assert listed.status_code == 200
    assert listed.json() == {"invitations": [response.json()["invitation"]]}


def test_member_may_not_list_or_create_invitations(api, cast):
    token = issue(cast.member)
    listed = api.get("/v1/auth/invitations", **bearer(token))
    created = api.post("/v1/auth/invitations", {"email": "friend@example.com"}, **bearer(token))

    assert listed.status_code == created.status_code == 403
    assert listed.json() == error("only a workspace Owner or Admin may see invitations", 403)
    assert created.json() == error("only a workspace Owner or Admin may invite members", 403)
    assert not pending().exists()


def test_invitations_of_another_workspace_stay_hidden(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    invite(api, issue(cast.owner), django_capture_on_commit_callbacks, "friend@example.com")
    response = api.get("/v1/auth/invitations", **bearer(issue(cast.outsider)))
    assert response.status_code == 200
    assert response.json() == {"invitations": []}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"email": "nope"}, 400, "enter a valid email address"),
        ({"email": "x@example.com", "role": "Owner"}, 400, 'role: "Owner" is not a valid choice.'),
        ({}, 400, "email: This field is required."),
        (
            {"email": "MEMBER@northwind.test"},
            409,
            "this person is already a member of the workspace",
        ),
    ],
)
def test_invitation_bad_input(api, cast, body, status, message):
    response = api.post("/v1/auth/invitations", body, **bearer(issue(cast.owner)))
    assert response.status_code == status
    assert response.json() == error(message, status)
    assert not pending().exists()


@pytest.mark.parametrize("path", ["/v1/auth/invitations", "/v1/auth/members"])
def test_workspace_endpoints_are_401_without_a_session(api, operator_configured, path):
    anonymous = api.get(path)
    assert anonymous.status_code == 401
    assert anonymous.json() == error("authentication required", 401)
    forged = api.get(path, **bearer("mxs_" + "2" * 64))
    assert forged.status_code == 401
    assert forged.json() == error("missing or invalid bearer token", 401)
    posted = api.post("/v1/auth/invitations", {"email": "x@example.com"})
    assert posted.status_code == 401
    assert not pending().exists()


def test_accepting_creates_the_account_and_a_session_with_the_invited_role(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    invite(
        api, issue(cast.owner), django_capture_on_commit_callbacks, "newbie@example.com", "Admin"
    )
    secret = token_in(outbox[-1].body, "mxin")

    response = api.post(
        "/v1/auth/invitations/accept", {"token": secret, "password": NEW_PASSWORD, "name": "Newbie"}
    )

    assert response.status_code == 200
    user = User.objects.get(email="newbie@example.com")
    assert response.json() == {
        "token": response.json()["token"],
        "user": payload(user, cast.workspace, "Admin"),
    }
    assert user.password.startswith("argon2$argon2id$")
    me = api.get("/v1/auth/me", **bearer(response.json()["token"]))
    assert me.json()["user"]["workspace_id"] == cast.workspace.pk
    assert Membership.objects.get(user=user).role == "Admin"
    assert pending_or_accepted().accepted_at is not None

    reused = api.post(
        "/v1/auth/invitations/accept", {"token": secret, "password": NEW_PASSWORD, "name": "Again"}
    )
    assert reused.status_code == 404
    assert reused.json() == error("invalid or expired invitation", 404)
    assert User.objects.filter(email="newbie@example.com").count() == 1


def test_an_existing_account_must_prove_its_password_to_accept(
    api, cast, outbox, django_capture_on_commit_callbacks
):
    invite(api, issue(cast.owner), django_capture_on_commit_callbacks, "outsider@globex.test")
    secret = token_in(outbox[-1].body, "mxin")

    wrong = api.post("/v1/auth/invitations/accept", {"token": secret, "password": "guessing 1234"})
    assert wrong.status_code == 401
    assert wrong.json() == error("invalid email or password", 401)
    assert not Membership.objects.filter(user=cast.outsider, workspace=cast.workspace).exists()

    right = api.post("/v1/auth/invitations/accept", {"token": secret, "password": PASSWORD})
    assert right.status_code == 200
    assert right.json()["user"] == payload(cast.outsider, cast.workspace, "Member")
    assert Membership.objects.filter(user=cast.outsider).count() == 2
    assert User.objects.get(pk=cast.outsider.pk).name == "Oscar Outsider"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"password": NEW_PASSWORD}, 400, "name is required"),
        ({"password": NEW_PASSWORD, "name": "N" * 201}, 400, "name must be at most 200 characters"),
        ({"password": "password123", "name": "N"}, 400, "This password is too common."),
        ({"name": "N"}, 400, "password: This field is required."),
    ],
)
def test_accept_bad_input(
    api, cast, outbox, django_capture_on_commit_callbacks, body, status, message
):
    invite(api, issue(cast.owner), django_capture_on_commit_callbacks, "newbie@example.com")
    secret = token_in(outbox[-1].body, "mxin")
    response = api.post("/v1/auth/invitations/accept", {"token": secret, **body})
    assert response.status_code == status
    assert response.json() == error(message, status)
    assert not User.objects.filter(email="newbie@example.com").exists()
    assert pending_or_accepted().accepted_at is None


def test_accept_unknown_or_expired_invitation_is_404(
    api, cast, clock, outbox, django_capture_on_commit_callbacks
):
    invite(api, issue(cast.owner), django_capture_on_commit_callbacks, "late@example.com")
    secret = token_in(outbox[-1].body, "mxin")
    body = {"password": NEW_PASSWORD, "name": "Late"}

    unknown = api.post("/v1/auth/invitations/accept", {"token": "mxin_" + "3" * 64, **body})
    assert unknown.status_code == 404
    assert unknown.json() == error("invalid or expired invitation", 404)
    clock.advance(days=7, seconds=1)
    expired = api.post("/v1/auth/invitations/accept", {"token": secret, **body})
    assert expired.status_code == 404
    assert expired.json() == error("invalid or expired invitation", 404)
    assert not User.objects.filter(email="late@example.com").exists()


def test_members_lists_the_callers_workspace_only(api, cast):
    response = api.get("/v1/auth/members", **bearer(issue(cast.member)))
    assert response.status_code == 200
    members = response.json()["members"]
    assert [(m["email"], m["role"]) for m in members] == [
        ("owner@northwind.test", "Owner"),
        ("admin@northwind.test", "Admin"),
        ("member@northwind.test", "Member"),
    ]
    assert set(members[0]) == {"user_id", "name", "email", "role", "joined_at"}
    assert members[0]["user_id"] == cast.owner.pk
    other = api.get("/v1/auth/members", **bearer(issue(cast.outsider)))
    assert [m["email"] for m in other.json()["members"]] == ["outsider@globex.test"]


def test_list_endpoints_keep_a_query_budget(api, cast):
    token = issue(cast.owner)

    def count(path: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path, **bearer(token)).status_code == 200
        return len(queries)

    before = {path: count(path) for path in ("/v1/auth/members", "/v1/auth/invitations")}
    for n in range(5):
        invitation_create(email=f"i{n}@x.test", actor=actor_of(cast.workspace, cast.owner))
    extra = User.objects.create_user(email="extra@northwind.test", name="Extra")  # no hash
    Membership.objects.create(user=extra, workspace=cast.workspace, role="Member")
    after = {path: count(path) for path in before}
    assert after == before
    assert max(after.values()) <= 6


# --- wrong methods ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/auth/signup"),
        ("get", "/v1/auth/login"),
        ("post", "/v1/auth/me"),
        ("get", "/v1/auth/logout"),
        ("get", "/v1/auth/forgot"),
        ("get", "/v1/auth/reset"),
        ("get", "/v1/auth/verify"),
        ("get", "/v1/auth/verify/resend"),
        ("put", "/v1/auth/invitations"),
        ("get", "/v1/auth/invitations/accept"),
        ("post", "/v1/auth/members"),
    ],
)
def test_wrong_method_is_405(api, cast, method, path):
    # A signed-in caller: the anonymous local-dev caller is refused (401) before routing
    # on the workspace endpoints (members, invitations), as the gate runs first.
    response = getattr(api, method)(path, **bearer(issue(cast.owner)))
    assert response.status_code == 405
    assert response.json() == error(f'Method "{method.upper()}" not allowed.', 405)
