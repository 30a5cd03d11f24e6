"""Reads only the console needs (lists and counts the API has no endpoint for).

Every one is scoped by the same ``for_workspace`` querysets the API's selectors use:
``workspace=None`` is the operator's view of everything, a workspace sees its own.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class EventRow:
    """One row of a job's event log: an event, or a run of them shown as one.

    Rows with a ``collapse`` key stand for every event of that key: the latest install
    progress of one package replaces the previous one, and the refused connections to
    one host:port are counted. The row sits where its first event was and carries the
    latest one's ``seq`` (the page's script, which collapses live events the same way,
    resumes after the highest). ``count`` is shown for egress rows.
    """

    seq: int
    step: str
    status: str
    message: str
    detail: str = ""
    collapse: str = ""
    count: int = 1

    @property
    def counted(self) -> bool:
        return self.collapse.startswith("egress:")


def event_collapse_key(step: str, status: str, data: Any) -> str:
    """The key events shown as one row share; empty for an event that is its own row."""
    data = data if isinstance(data, dict) else {}
    if step == "install" and status == "progress":
        return f"install:{data.get('package', '')}"
    if step == "egress_denied":
        return f"egress:{data.get('host', '')}:{data.get('port', '')}"
    return ""


def event_detail(step: str, data: Any) -> str:
    """What an install or egress event's data says, as a short line."""
    data = data if isinstance(data, dict) else {}
    if step == "install":
        parts = [
            str(data["package"]) if data.get("package") else "",
            f"{data['fetched']} fetched" if isinstance(data.get("fetched"), int) else "",
            f"{data['elapsed_s']:.1f} s" if isinstance(data.get("elapsed_s"), int | float) else "",
            str(data["line"]) if data.get("line") else "",
        ]
        return " · ".join(part for part in parts if part)
    if step == "egress_denied" and data.get("host"):
        return f"{data['host']}:{data.get('port', '')}"
    return ""


def job_events(job: Job) -> list[EventRow]:
    """The job's event log so far, in order, collapsed as :class:`EventRow` says (the
    page renders it; live events follow)."""
    rows: list[EventRow] = []
    collapsed: dict[str, EventRow] = {}
    for event in JobEvent.objects.filter(job_id=job.pk).order_by("seq"):
        key = event_collapse_key(event.step, event.status, event.data)
        detail = event_detail(event.step, event.data)
        row = collapsed.get(key) if key else None
        if row is None:
            row = EventRow(event.seq, event.step, event.status, event.message, detail, key)
            rows.append(row)
            if key:
                collapsed[key] = row
            continue
        row.seq, row.status, row.message, row.detail = (
            event.seq,
            event.status,
            event.message,
            detail,
        )
        row.count += 1
    return rows


def catalog_item(item_id: str) -> dict[str, Any] | None:
    """The catalog entry with this id, or None."""
    return next((item for item in catalog_items() if item["id"] == item_id), None)


def memberships_of(user: User) -> list[Membership]:
    """The workspaces ``user`` belongs to (the switcher lists them), oldest first."""
    return list(
        Membership.objects.select_related("workspace").filter(user=user).order_by("created_at")
    )
