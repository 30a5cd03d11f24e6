"""Password resets and email verification: single-use, expiring, hashed links."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts import throttle
from accounts.audit import audit_record
from accounts.emails import RESET_REQUEST, email_queue, email_send
from accounts.models import (
    EmailVerification,
    PasswordReset,
    SessionToken,
    User,
)
from accounts.services.identity import (
    check_password_policy,
    normalise_email,
    primary_membership,
)
from accounts.signals import credentials_changed
from matrixcloud.errors import BadRequest
from matrixcloud.lib.tokens import new_secret, secret_hash

RESET_TTL = timedelta(hours=1)
VERIFY_TTL = timedelta(hours=24)


def password_reset_request(*, email: str, ip: str = "") -> None:
    """Queue the reset in the outbox for the worker, whether or not the account exists.

    The request does the same work either way (one outbox row, one wake after commit),
    so neither its answer nor its timing says whether the email is registered.
    """
    with transaction.atomic():
        email_queue(RESET_REQUEST, email=normalise_email(email), ip=ip)


def password_reset_issue(*, email: str, ip: str = "") -> None:
    """Create a reset link for an existing account and mail it at once (the worker,
    delivering the outbox row of the request): the secret is never stored."""
    user = User.objects.filter(email__iexact=normalise_email(email), is_active=True).first()
    if user is None:
        return
    secret = new_secret("mxpr")
    now = timezone.now()
    with transaction.atomic():
        PasswordReset.objects.filter(user=user, used_at__isnull=True).update(expires_at=now)
        PasswordReset.objects.create(
            user=user, token_hash=secret_hash(secret), expires_at=now + RESET_TTL
        )
        membership = primary_membership(user)
        audit_record(
            action="user.password_reset.requested",
            actor=user.pk,
            workspace=membership.workspace_id if membership else None,
            target=user.email,
            ip=ip,
        )
    email_send("password_reset", to=user.email, name=user.name, secret=secret)


def password_reset_complete(*, token: str, password: str, ip: str = "") -> User:
    """Set a new password from a reset link; ends every session of the user."""
    reset = (
        PasswordReset.objects.select_related("user")
        .filter(token_hash=secret_hash(token.strip()))
        .first()
    )
    check_password_policy(password, reset.user if reset else None)
    if reset is None:
        raise BadRequest("invalid or expired reset link")
    now = timezone.now()
    if reset.used_at is not None:
        raise BadRequest("this reset link has already been used")
    if reset.expires_at <= now:
        raise BadRequest("this reset link has expired")
    user = reset.user
    with transaction.atomic():
        claimed = PasswordReset.objects.filter(pk=reset.pk, used_at__isnull=True).update(
            used_at=now
        )
        if claimed != 1:
            raise BadRequest("this reset link has already been used")
        user.set_password(password)
        user.save(update_fields=["password"])
        SessionToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
        credentials_changed()
        throttle.login_succeeded(user.email)  # the owner proved control: lift any back-off
        membership = primary_membership(user)
        audit_record(
            action="user.password_reset.completed",
            actor=user.pk,
            workspace=membership.workspace_id if membership else None,
            target=user.email,
            ip=ip,
        )
    return user


def verification_send(user: User) -> None:
    secret = new_secret("mxev")
    now = timezone.now()
    EmailVerification.objects.filter(user=user, used_at__isnull=True).update(expires_at=now)
    EmailVerification.objects.create(
        user=user, token_hash=secret_hash(secret), expires_at=now + VERIFY_TTL
    )
    email_queue("verify", user=user, secret=secret)


def email_verification_resend(*, user: User) -> bool:
    """Mail a fresh verification link; False when the email is already verified."""
    if user.email_verified_at is not None:
        return False
    with transaction.atomic():
        verification_send(user)
    return True


def email_verify(*, token: str, ip: str = "") -> User:
    """Consume a verification link and mark the user's email verified (idempotent)."""
    record = (
        EmailVerification.objects.select_related("user")
        .filter(token_hash=secret_hash(token.strip()))
        .first()
    )
    if record is None:
        raise BadRequest("invalid verification link")
    if record.used_at is not None:
        return record.user
    now = timezone.now()
    if record.expires_at <= now:
        raise BadRequest("verification link expired")
    with transaction.atomic():
        EmailVerification.objects.filter(pk=record.pk, used_at__isnull=True).update(used_at=now)
        User.objects.filter(pk=record.user_id, email_verified_at__isnull=True).update(
            email_verified_at=now
        )
        membership = primary_membership(record.user)
        audit_record(
            action="user.email_verified",
            actor=record.user_id,
            workspace=membership.workspace_id if membership else None,
            target=record.user.email,
            ip=ip,
        )
    record.user.refresh_from_db(fields=["email_verified_at"])
    return record.user
