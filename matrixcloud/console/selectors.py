"""Reads only the console needs (lists and counts the API has no endpoint for).

Every one is scoped by the same ``for_workspace`` querysets the API's selectors use:
``workspace=None`` is the operator's view of everything, a workspace sees its own.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from accounts.models import Membership, User, Workspace
from jobs.choices import JobStatus
from jobs.models import Job, JobEvent
from models_registry.catalog import catalog_items
from sandbox.models import SandboxSession

SESSION_PAGE = 100


def sessions_recent(*, workspace: Workspace | None) -> QuerySet[SandboxSession]:
    """The newest sandbox sessions the workspace may see, with their jobs."""
    return (
        SandboxSession.objects.for_workspace(workspace)
        .select_related("job")
        .order_by("-created_at", "-pk")[:SESSION_PAGE]
    )


def job_counts(*, workspace: Workspace | None) -> dict[str, int]:
    """How many of the workspace's jobs are in each status (every status present)."""
    rows = (
        Job.objects.for_workspace(workspace)
        .values("status")
        .annotate(n=Count("pk"))
        .order_by("status")
    )
    counts = dict.fromkeys(JobStatus.values, 0)
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def live_sessions_count(*, workspace: Workspace | None) -> int:
    return int(
        SandboxSession.objects.for_workspace(workspace)
        .filter(job__status__in=JobStatus.active())
        .count()
    )


def job_events(job: Job) -> list[JobEvent]:
    """The job's events so far, in order (the page renders them; live ones follow)."""
    return list(JobEvent.objects.filter(job_id=job.pk).order_by("seq"))


def catalog_item(item_id: str) -> dict[str, Any] | None:
    """The catalog entry with this id, or None."""
    return next((item for item in catalog_items() if item["id"] == item_id), None)


def memberships_of(user: User) -> list[Membership]:
    """The workspaces ``user`` belongs to (the switcher lists them), oldest first."""
    return list(
        Membership.objects.select_related("workspace").filter(user=user).order_by("created_at")
    )
