"""Sign-up, sign-in and sessions."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts import throttle
from accounts.audit import audit_record
from accounts.choices import AuditStatus, Role
from accounts.models import (
    Membership,
    SessionToken,
    User,
    Workspace,
)
from accounts.services.identity import (
    IssuedSession,
    check_password_policy,
    normalise_email,
    primary_membership,
    unique_slug,
    valid_email,
    valid_name,
)
from accounts.services.passwords import verification_send
from accounts.signals import credentials_changed
from matrixcloud.errors import Conflict, Forbidden, Unauthorized
from matrixcloud.lib.tokens import new_secret, secret_hash

SIGNUP_ATTEMPTS = 3


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
    email = valid_email(email)
    name = valid_name(name)
    check_password_policy(password, User(email=email, name=name))
    ws_name = workspace_name if workspace_name.strip() else f"{name}'s workspace"
    for _attempt in range(SIGNUP_ATTEMPTS):
        if User.objects.filter(email__iexact=email).exists():
            raise Conflict("an account with this email already exists")
        try:
            with transaction.atomic():
                workspace = Workspace.objects.create(name=ws_name[:200], slug=unique_slug(ws_name))
                user = User.objects.create_user(email=email, password=password, name=name)
                membership = Membership.objects.create(
                    user=user, workspace=workspace, role=Role.OWNER
                )
                issued = session_issue(
                    user=user, membership=membership, ip=ip, user_agent=user_agent
                )
                verification_send(user)
                audit_record(
                    action="user.signup", actor=user.pk, workspace=workspace, target=email, ip=ip
                )
            return issued
        except (IntegrityError, ValidationError):
            # A concurrent signup took the email (answered above on the next turn) or
            # the slug (a fresh one is chosen on the next turn).
            continue
    raise Conflict("could not create the account: retry")


def user_login(*, email: str, password: str, ip: str = "", user_agent: str = "") -> IssuedSession:
    """Check the password and start a session; failures are audited and throttled."""
    typed = email
    email = normalise_email(email)
    throttle.login_check(email)
    user = User.objects.filter(email__iexact=email, is_active=True).first()
    if user is None:
        User().set_password(password)  # spend the time a real check would
        _login_failed(email=email, typed=typed, user=None, ip=ip)
        raise Unauthorized("invalid email or password")
    if not user.check_password(password):  # upgrades a matrix-runtime hash on success
        _login_failed(email=email, typed=typed, user=user, ip=ip)
        raise Unauthorized("invalid email or password")
    membership = primary_membership(user)
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
    throttle.login_succeeded(email)
    return issued


def _login_failed(*, email: str, typed: str, user: User | None, ip: str) -> None:
    workspace = primary_membership(user).workspace_id if user else None  # type: ignore[union-attr]
    with transaction.atomic():
        audit_record(
            action="user.login",
            actor=email,
            workspace=workspace,
            target=typed,
            ip=ip,
            status=AuditStatus.FAILURE,
        )
    throttle.login_failed(email)


def session_revoke(*, session: SessionToken, everywhere: bool = False, ip: str = "") -> int:
    """End this session, or every session of its user; returns how many ended."""
    if everywhere:
        return session_revoke_all(user=session.user, workspace=session.workspace_id, ip=ip)
    ended = SessionToken.objects.filter(pk=session.pk)
    return _sessions_end(
        ended, user_id=session.user_id, workspace=session.workspace_id, ip=ip, everywhere=False
    )


def session_revoke_all(
    *, user: User, workspace: Workspace | str | None = None, ip: str = ""
) -> int:
    """Log ``user`` out everywhere: end every session of theirs; returns how many ended.

    The one way to do it, whether asked with a bearer session or with the console's
    cookie (``/v1/auth/logout?all=true``): audited as ``user.logout`` in ``workspace``
    (the user's first workspace when not given)."""
    if workspace is None:
        membership = primary_membership(user)
        workspace = membership.workspace_id if membership else None
    ended = SessionToken.objects.filter(user=user)
    return _sessions_end(ended, user_id=user.pk, workspace=workspace, ip=ip, everywhere=True)


def _sessions_end(
    sessions: QuerySet[SessionToken],
    *,
    user_id: str,
    workspace: Workspace | str | None,
    ip: str,
    everywhere: bool,
) -> int:
    with transaction.atomic():
        ended = sessions.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        credentials_changed()
        audit_record(
            action="user.logout",
            actor=user_id,
            workspace=workspace,
            ip=ip,
            meta={"all": everywhere, "sessions": ended},
        )
    return ended
