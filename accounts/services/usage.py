"""Usage metering: every metered action records an event; the workspace sees sums.

``usage_record`` is one INSERT that joins the caller's transaction (cheap enough for
any path that already writes); batched paths (a host's tool-call recorder) use
``usage_record_many``. Kinds are :class:`accounts.choices.UsageKind`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from accounts.choices import UsageKind
from accounts.models import UsageEvent, User, Workspace

DEFAULT_DAYS = 30
MAX_DAYS = 365


@dataclass(frozen=True)
class Usage:
    """One metered action to record (for ``usage_record_many``)."""

    workspace_id: str
    kind: str
    quantity: int = 1
    user_id: str | None = None
    runtime_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _checked(usage: Usage) -> UsageEvent:
    if usage.kind not in UsageKind.values:
        raise ValueError(f"unknown usage kind {usage.kind!r}")
    if isinstance(usage.quantity, bool) or not isinstance(usage.quantity, int):
        raise ValueError("usage quantity must be an integer")
    if usage.quantity < 1:
        raise ValueError("usage quantity must be at least 1")
    return UsageEvent(
        workspace_id=usage.workspace_id,
        kind=usage.kind,
        quantity=usage.quantity,
        user_id=usage.user_id,
        runtime_id=usage.runtime_id[:64],
        meta=usage.meta,
        created_at=timezone.now(),
    )


def usage_record(
    *,
    workspace: Workspace | str,
    kind: str,
    quantity: int = 1,
    user: User | None = None,
    runtime_id: str = "",
    meta: dict[str, Any] | None = None,
) -> None:
    """Record ``quantity`` of ``kind`` for ``workspace`` (a ValueError for an unknown
    kind or a quantity below 1: both are bugs in the caller)."""
    workspace_id = workspace.pk if isinstance(workspace, Workspace) else workspace
    _checked(
        Usage(
            workspace_id=workspace_id,
            kind=kind,
            quantity=quantity,
            user_id=user.pk if user is not None else None,
            runtime_id=runtime_id,
            meta=meta or {},
        )
    ).save(force_insert=True)


def usage_record_many(usages: Iterable[Usage]) -> int:
    """Record several events in one INSERT; how many were written."""
    rows = [_checked(usage) for usage in usages]
    UsageEvent.objects.bulk_create(rows)
    return len(rows)


def usage_since(days: int, *, now: datetime | None = None) -> datetime:
    """The start of a window of ``days`` days ending now (ValueError outside 1..365)."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be an integer between 1 and {MAX_DAYS}")
    return (now or timezone.now()) - timedelta(days=days)


def usage_sums(*, workspace: Workspace, since: datetime) -> dict[str, int]:
    """Quantity per kind recorded for ``workspace`` at or after ``since``."""
    rows = (
        UsageEvent.objects.filter(workspace=workspace, created_at__gte=since)
        .values("kind")
        .annotate(total=Sum("quantity"))
        .order_by("kind")
    )
    return {row["kind"]: int(row["total"]) for row in rows}


def usage_summary(*, workspace: Workspace, days: int = DEFAULT_DAYS) -> dict[str, int]:
    """Quantity per kind recorded for ``workspace`` in the last ``days`` days."""
    return usage_sums(workspace=workspace, since=usage_since(days))
