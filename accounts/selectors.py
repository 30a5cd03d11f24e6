"""Reads for accounts: wire shapes of users, members, invitations, provider credentials
and the audit log."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import AuditEvent, Invitation, Membership, ProviderCredential, Workspace
from matrixcloud.errors import BadRequest

AUDIT_PAGE = 200


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


@dataclass(frozen=True)
class AuditPage:
    """One page of a workspace's audit events, newest first, and the next page's cursor."""

    events: list[AuditEvent]
    next_cursor: str | None


def audit_page(*, workspace: Workspace, limit: int = AUDIT_PAGE, cursor: str = "") -> AuditPage:
    """Events of ``workspace`` newest first (append order, so ties in time cannot
    reorder or repeat a row across pages); ``cursor`` is a previous ``next_cursor``."""
    if not 1 <= limit <= AUDIT_PAGE:
        raise BadRequest(f"limit must be between 1 and {AUDIT_PAGE}")
    events = AuditEvent.objects.filter(workspace=workspace)
    if cursor:
        if not cursor.isdigit() or len(cursor) > 19:
            raise BadRequest("invalid cursor")
        events = events.filter(seq__lt=int(cursor))
    page = list(events.order_by("-seq")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return AuditPage(page, str(page[-1].seq) if more else None)


def providers_of(*, workspace: Workspace) -> QuerySet[ProviderCredential]:
    """The workspace's credentials by provider and label; secrets are not even loaded."""
    return (
        ProviderCredential.objects.filter(workspace=workspace)
        .defer("secret")
        .order_by("provider", "label")
    )
