"""Invitations of people into a workspace by its Owner or an Admin."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts import throttle
from accounts.audit import audit_record
from accounts.choices import Role
from accounts.emails import email_queue
from accounts.models import Invitation, Membership, User
from accounts.principals import Actor
from accounts.services.identity import (
    IssuedSession,
    check_password_policy,
    valid_email,
    valid_name,
)
from accounts.services.sessions import session_issue
from matrixcloud.errors import BadRequest, Conflict, NotFound, Unauthorized
from matrixcloud.lib.tokens import new_secret, secret_hash

INVITE_TTL = timedelta(days=7)


def invitation_create(
    *,
    actor: Actor,
    email: str,
    role: str = Role.MEMBER,
) -> tuple[Invitation, str]:
    """Invite ``email`` into the actor's workspace; returns the invitation and its secret."""
    workspace = actor.workspace
    email = valid_email(email)
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
            invited_by=actor.user,
            expires_at=now + INVITE_TTL,
        )
        audit_record(
            action="workspace.member.invited",
            actor=actor.id,
            workspace=workspace,
            target=email,
            ip=actor.ip,
            meta={"role": role, "invitation_id": invitation.pk},
        )
        email_queue("invite", email=email, secret=secret, workspace_name=workspace.name)
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
    if user is not None:
        # Proving an existing account's password is a sign-in: same back-off, same rules.
        throttle.login_check(user.email)
        if not user.is_active or not user.check_password(password):
            throttle.login_failed(user.email)
            raise Unauthorized("invalid email or password")
    if user is None:
        name = valid_name(name)
        check_password_policy(password, User(email=invitation.email, name=name))
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
