"""Reads for jobs: snapshots in the original's shape (docs/COMPATIBILITY.md#c-08), and
keyset-paged lists."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError
from django.db.models import Q, QuerySet

from accounts.models import Workspace
from jobs.choices import JobStatus
from jobs.models import Job
from matrixcloud.errors import BadRequest, NotFound

MAX_PAGE = 200


# What a snapshot reads: lists load only these (not the payload, which can be large, nor
# the engine's bookkeeping); reading another field of a listed job costs a query.
SNAPSHOT_FIELDS = (
    "id",
    "type",
    "status",
    "created_at",
    "expires_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "workspace_id",
    "ttl_seconds",
    "progress_at",
    "deadline_at",
    "attempts",
)


def job_get(*, job_id: str, workspace: Workspace | None) -> Job:
    """The job, if ``workspace`` may see it (another workspace's job is a 404)."""
    job = Job.objects.for_workspace(workspace).filter(pk=job_id).first()
    if job is None:
        raise NotFound("job not found")
    return job


@dataclass(frozen=True)
class JobPage:
    """One page of jobs, newest first, and the cursor of the next page."""

    jobs: list[Job]
    next_cursor: str | None


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.pk]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadRequest("invalid cursor") from exc


def job_list(
    *,
    workspace: Workspace | None,
    limit: int = 50,
    cursor: str = "",
    job_type: str = "",
    status: str = "",
) -> JobPage:
    """One page of the jobs ``workspace`` may see (None: all), newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    if status and status not in JobStatus.values:
        raise BadRequest(f"status must be one of {', '.join(JobStatus.values)}")
    jobs: QuerySet[Job] = Job.objects.for_workspace(workspace)
    if job_type:
        jobs = jobs.filter(type=job_type)
    if status:
        jobs = jobs.filter(status=status)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        jobs = jobs.filter(Q(created_at__lt=created) | Q(created_at=created, pk__lt=job_id))
    page = list(jobs.only(*SNAPSHOT_FIELDS).order_by("-created_at", "-pk")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return JobPage(page, _encode_cursor(page[-1]) if more and page else None)


def active_job_count() -> int:
    """Jobs queued or running, across all workspaces (0 while the database is down)."""
    try:
        return Job.objects.active().count()
    except DatabaseError:
        return 0


def job_row_count() -> int:
    """Job rows in the database, finished ones included (0 while it is down)."""
    try:
        return Job.objects.count()
    except DatabaseError:
        return 0
