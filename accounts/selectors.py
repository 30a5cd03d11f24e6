"""Reads for accounts: wire shapes of users, members, invitations and the audit log."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import AuditEvent, Invitation, Membership, Workspace

AUDIT_PAGE = 200


def user_payload(membership: Membership) -> dict[str, Any]:
    """The original's user JSON (signup, login, me), plus ``email_verified``."""
    user, workspace = membership.user, membership.workspace
    return {
        "id": user.pk,
        "name": user.name,
        "email": user.email,
        "role": membership.role,
        "workspace": workspace.name,
        "workspace_slug": workspace.slug,
        "workspace_id": workspace.pk,
        "email_verified": user.email_verified_at is not None,
    }


def members_of(*, workspace: Workspace) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(workspace=workspace)
        .select_related("user")
        .order_by("created_at", "pk")
    )


def invitations_pending(*, workspace: Workspace) -> QuerySet[Invitation]:
    return Invitation.objects.filter(
        workspace=workspace, accepted_at__isnull=True, expires_at__gt=timezone.now()
    ).order_by("-created_at")


def audit_events_recent(*, workspace: Workspace, limit: int = AUDIT_PAGE) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(workspace=workspace).order_by("-seq")[:limit]
