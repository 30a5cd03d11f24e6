"""Writes for accounts: sign-up, sessions, password reset, verification, invitations.

Each function makes one complete change (rows, audit record, post-commit email) in one
transaction. They raise `matrixcloud.errors` and know nothing of HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import ratelimit
from accounts.audit import audit_record
from accounts.choices import AuditStatus, Role
from accounts.emails import send_account_email_on_commit
from accounts.models import (
    EmailVerification,
    Invitation,
    Membership,
    PasswordReset,
    SessionToken,
    User,
    Workspace,
)
from matrixcloud.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from matrixcloud.lib.tokens import new_secret, secret_hash

EMAIL_RE = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")
RESET_TTL = timedelta(hours=1)
VERIFY_TTL = timedelta(hours=24)
INVITE_TTL = timedelta(days=7)
LOCAL_WORKSPACE_SLUG = "local"


@dataclass(frozen=True)
class IssuedSession:
    """A new session: the token (shown once), its row, and the membership it acts in."""

    token: str
    session: SessionToken
    membership: Membership


def normalise_email(email: str) -> str:
    return email.strip().lower()


def workspace_slug_base(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    return slug or "workspace"


def _unique_slug(name: str) -> str:
    base = workspace_slug_base(name)[:100]
    taken = set(Workspace.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    if base not in taken:
        return base
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _check_password(password: str, user: User | None = None) -> None:
    if len(password) > settings.PASSWORD_MAX_LENGTH:
        raise BadRequest(f"password must be at most {settings.PASSWORD_MAX_LENGTH} characters")
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise BadRequest(" ".join(exc.messages)) from exc


def _valid_email(email: str) -> str:
    email = normalise_email(email)
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise BadRequest("enter a valid email address")
    return email


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise BadRequest("name is required")
    limit = User._meta.get_field("name").max_length
    if limit is not None and len(name) > limit:
        raise BadRequest(f"name must be at most {limit} characters")
    return name


def session_issue(
    *, user: User, membership: Membership, ip: str = "", user_agent: str = ""
) -> IssuedSession:
    """Start a new bearer session for ``user`` acting in ``membership``'s workspace."""
    now = timezone.now()
    token = new_secret("mxs")
    session = SessionToken.objects.create(
        token_hash=secret_hash(token),
        user=user,
        workspace_id=membership.workspace_id,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=settings.SESSION_TOKEN_MAX_AGE_DAYS),
        idle_expires_at=now + timedelta(hours=settings.SESSION_TOKEN_IDLE_HOURS),
        ip=ip[:64],
        user_agent=user_agent[:300],
    )
    return IssuedSession(token=token, session=session, membership=membership)


def user_signup(
    *,
    name: str,
    email: str,
    password: str,
    workspace_name: str = "",
    ip: str = "",
    user_agent: str = "",
) -> IssuedSession:
    """Create a workspace, its Owner and a first session; email a verification link."""
    email = _valid_email(email)
    name = _valid_name(name)
    _check_password(password, User(email=email, name=name))
    ws_name = workspace_name if workspace_name.strip() else f"{name}'s workspace"
    try:
        with transaction.atomic():
            if User.objects.filter(email__iexact=email).exists():
                raise Conflict("an account with this email already exists")
            workspace = Workspace.objects.create(name=ws_name[:200], slug=_unique_slug(ws_name))
            user = User.objects.create_user(email=email, password=password, name=name)
            membership = Membership.objects.create(user=user, workspace=workspace, role=Role.OWNER)
            issued = session_issue(user=user, membership=membership, ip=ip, user_agent=user_agent)
            _verification_send(user)
            audit_record(
                action="user.signup", actor=user.pk, workspace=workspace, target=email, ip=ip
            )
    except IntegrityError as exc:
        raise Conflict("an account with this email already exists") from exc
    return issued


def _primary_membership(user: User) -> Membership | None:
    return (
        Membership.objects.select_related("workspace")
        .filter(user=user)
        .order_by("created_at", "pk")
        .first()
    )


def user_login(*, email: str, password: str, ip: str = "", user_agent: str = "") -> IssuedSession:
    """Check the password and start a session; failures are audited and throttled."""
    typed = email
    email = normalise_email(email)
    ratelimit.login_check(email)
    user = User.objects.filter(email__iexact=email, is_active=True).first()
    if user is None:
        User().check_password(password)  # spend the time a real check would
        _login_failed(email=email, typed=typed, user=None, ip=ip)
        raise Unauthorized("invalid email or password")
    if not user.check_password(password):  # upgrades a matrix-runtime hash on success
        _login_failed(email=email, typed=typed, user=user, ip=ip)
        raise Unauthorized("invalid email or password")
    membership = _primary_membership(user)
    if membership is None:
        raise Forbidden("this account belongs to no workspace")
    with transaction.atomic():
        issued = session_issue(user=user, membership=membership, ip=ip, user_agent=user_agent)
        User.objects.filter(pk=user.pk).update(last_login=timezone.now())
        audit_record(
            action="user.login",
            actor=user.pk,
            workspace=membership.workspace_id,
            target=typed,
            ip=ip,
        )
    ratelimit.login_succeeded(email)
    return issued


def _login_failed(*, email: str, typed: str, user: User | None, ip: str) -> None:
    workspace = _primary_membership(user).workspace_id if user else None  # type: ignore[union-attr]
    with transaction.atomic():
        audit_record(
            action="user.login",
            actor=email,
            workspace=workspace,
            target=typed,
            ip=ip,
            status=AuditStatus.FAILURE,
        )
    ratelimit.login_failed(email)


def session_revoke(*, session: SessionToken, everywhere: bool = False, ip: str = "") -> int:
    """End this session, or every session of its user; returns how many ended."""
    now = timezone.now()
    with transaction.atomic():
        if everywhere:
            ended = SessionToken.objects.filter(
                user_id=session.user_id, revoked_at__isnull=True
            ).update(revoked_at=now)
        else:
            ended = SessionToken.objects.filter(pk=session.pk, revoked_at__isnull=True).update(
                revoked_at=now
            )
        audit_record(
            action="user.logout",
            actor=session.user_id,
            workspace=session.workspace_id,
            ip=ip,
            meta={"all": everywhere, "sessions": ended},
        )
    return ended


def password_reset_request(*, email: str, ip: str = "") -> None:
    """Mail a reset link if the account exists; the caller cannot tell either way."""
    email = normalise_email(email)
    user = User.objects.filter(email__iexact=email, is_active=True).first()
    if user is None:
        return
    secret = new_secret("mxpr")
    now = timezone.now()
    with transaction.atomic():
        PasswordReset.objects.filter(user=user, used_at__isnull=True).update(expires_at=now)
        PasswordReset.objects.create(
            user=user, token_hash=secret_hash(secret), expires_at=now + RESET_TTL
        )
        membership = _primary_membership(user)
        audit_record(
            action="user.password_reset.requested",
            actor=user.pk,
            workspace=membership.workspace_id if membership else None,
            target=user.email,
            ip=ip,
        )
        send_account_email_on_commit("password_reset", user=user, secret=secret)


def password_reset_complete(*, token: str, password: str, ip: str = "") -> User:
    """Set a new password from a reset link; ends every session of the user."""
    reset = (
        PasswordReset.objects.select_related("user")
        .filter(token_hash=secret_hash(token.strip()))
        .first()
    )
    _check_password(password, reset.user if reset else None)
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
        membership = _primary_membership(user)
        audit_record(
            action="user.password_reset.completed",
            actor=user.pk,
            workspace=membership.workspace_id if membership else None,
            target=user.email,
            ip=ip,
        )
    return user


def _verification_send(user: User) -> None:
    secret = new_secret("mxev")
    now = timezone.now()
    EmailVerification.objects.filter(user=user, used_at__isnull=True).update(expires_at=now)
    EmailVerification.objects.create(
        user=user, token_hash=secret_hash(secret), expires_at=now + VERIFY_TTL
    )
    send_account_email_on_commit("verify", user=user, secret=secret)


def email_verification_resend(*, user: User) -> bool:
    """Mail a fresh verification link; False when the email is already verified."""
    if user.email_verified_at is not None:
        return False
    with transaction.atomic():
        _verification_send(user)
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
        membership = _primary_membership(record.user)
        audit_record(
            action="user.email_verified",
            actor=record.user_id,
            workspace=membership.workspace_id if membership else None,
            target=record.user.email,
            ip=ip,
        )
    record.user.refresh_from_db(fields=["email_verified_at"])
    return record.user


def invitation_create(
    *,
    workspace: Workspace,
    inviter: User | None,
    actor: str,
    email: str,
    role: str = Role.MEMBER,
    ip: str = "",
) -> tuple[Invitation, str]:
    """Invite ``email`` into ``workspace``; returns the invitation and its secret."""
    email = _valid_email(email)
    if role not in (Role.ADMIN, Role.MEMBER):
        raise BadRequest("role must be Admin or Member")
    if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
        raise Conflict("this person is already a member of the workspace")
    secret = new_secret("mxin")
    now = timezone.now()
    with transaction.atomic():
        Invitation.objects.filter(
            workspace=workspace, email=email, accepted_at__isnull=True
        ).update(expires_at=now)
        invitation = Invitation.objects.create(
            workspace=workspace,
            email=email,
            role=role,
            token_hash=secret_hash(secret),
            invited_by=inviter,
            expires_at=now + INVITE_TTL,
        )
        audit_record(
            action="workspace.member.invited",
            actor=actor,
            workspace=workspace,
            target=email,
            ip=ip,
            meta={"role": role, "invitation_id": invitation.pk},
        )
        send_account_email_on_commit(
            "invite", email=email, secret=secret, workspace_name=workspace.name
        )
    return invitation, secret


def invitation_accept(
    *, token: str, password: str, name: str = "", ip: str = "", user_agent: str = ""
) -> IssuedSession:
    """Join the inviting workspace: an existing account proves its password, a new
    person creates one. Returns a session in that workspace."""
    invitation = (
        Invitation.objects.select_related("workspace")
        .filter(token_hash=secret_hash(token.strip()))
        .first()
    )
    now = timezone.now()
    if invitation is None or invitation.expires_at <= now or invitation.accepted_at:
        raise NotFound("invalid or expired invitation")
    user = User.objects.filter(email__iexact=invitation.email).first()
    if user is not None and not user.check_password(password):
        raise Unauthorized("invalid email or password")
    if user is None:
        name = _valid_name(name)
        _check_password(password, User(email=invitation.email, name=name))
    with transaction.atomic():
        claimed = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
            accepted_at=now
        )
        if claimed != 1:
            raise NotFound("invalid or expired invitation")
        if user is None:
            user = User.objects.create_user(
                email=invitation.email, password=password, name=name.strip(), email_verified_at=now
            )
        membership, _ = Membership.objects.get_or_create(
            user=user, workspace=invitation.workspace, defaults={"role": invitation.role}
        )
        audit_record(
            action="workspace.member.joined",
            actor=user.pk,
            workspace=invitation.workspace,
            target=user.email,
            ip=ip,
            meta={"role": membership.role, "invitation_id": invitation.pk},
        )
        return session_issue(user=user, membership=membership, ip=ip, user_agent=user_agent)


def local_workspace() -> Workspace:
    """The workspace of the local-dev operator (anonymous callers on loopback)."""
    workspace, _ = Workspace.objects.get_or_create(
        slug=LOCAL_WORKSPACE_SLUG, defaults={"name": "Local"}
    )
    return workspace
