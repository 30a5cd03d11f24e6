"""Writes for jobs: create, claim, finish, cancel, dispatch.

Every transition is a conditional update on ``status`` (rows != 1 means another
process won), and every terminal transition emits exactly one terminal event.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from pydantic import ValidationError

from accounts.audit import audit_record
from accounts.models import Workspace
from jobs import registry
from jobs.choices import TERMINAL_EVENTS, JobKind, JobStatus
from jobs.events import job_event_emit
from jobs.models import Job, JobSlots
from matrixcloud.errors import BadRequest, UnprocessableEntity

logger = logging.getLogger(__name__)


def ttl_resolve(ttl_seconds: int | None) -> int:
    """0 or absent means the maximum; negative or above the maximum is a 422."""
    maximum = settings.MATRIX_MAX_TTL_SECONDS
    ttl = ttl_seconds or 0
    if ttl < 0:
        raise UnprocessableEntity("ttl_seconds must not be negative")
    if ttl > maximum:
        raise UnprocessableEntity(f"ttl_seconds {ttl} exceeds maximum {maximum}")
    return ttl or maximum


def payload_validate(job_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Check ``payload`` against the type's params model; 422 naming the field."""
    handler = registry.handler_for(job_type)
    if handler is None:
        raise BadRequest(f'unknown job type: "{job_type}"')
    try:
        handler.Params.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "payload"
        raise UnprocessableEntity(f"payload.{field}: {first['msg']}") from exc
    return payload


def job_enqueue(
    *,
    workspace: Workspace,
    job_type: str,
    payload: dict[str, Any] | None,
    ttl_seconds: int | None,
    actor: str,
    user: Any = None,
    ip: str = "",
) -> Job:
    """Validate, write the job and its ``queue`` event, and dispatch it after commit."""
    handler = registry.handler_for(job_type)
    if handler is None:
        raise BadRequest(f'unknown job type: "{job_type}"')
    ttl = ttl_resolve(ttl_seconds)
    payload = payload_validate(job_type, payload or {})
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(
            workspace=workspace,
            created_by=user,
            type=job_type,
            kind=handler.kind,
            payload=payload,
            ttl_seconds=ttl,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        job_event_emit(
            job.pk,
            step="queue",
            status=JobStatus.QUEUED,
            message="Job queued",
            data={"type": job_type},
        )
        audit_record(
            action="job.created",
            actor=actor,
            workspace=workspace,
            target=job.pk,
            ip=ip,
            meta={"type": job_type, "ttl_seconds": ttl},
        )
        transaction.on_commit(lambda: job_dispatch(job.pk, job.kind))
    return job


def job_dispatch(job_id: str, kind: str) -> None:
    """Hand a queued job to whoever runs its kind (a worker, or a sandbox host)."""
    from jobs import dispatchers

    dispatchers.dispatch(job_id, kind)


def _slot_free(job: Job) -> bool:
    limit = settings.MATRIX_MAX_CONCURRENT_JOBS
    running = Job.objects.running().filter(kind=JobKind.BATCH)
    if running.count() >= limit:
        return False
    per_workspace = settings.MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE
    return running.filter(workspace_id=job.workspace_id).count() < per_workspace


def job_claim(job_id: str, *, runner: str) -> Job | None:
    """Move a queued job to running for ``runner`` if a slot is free; else None."""
    now = timezone.now()
    with transaction.atomic():
        JobSlots.objects.select_for_update().get_or_create(pk=1)
        job = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).first()
        if job is None:
            return None
        if job.expires_at <= now:
            _finish(job, JobStatus.EXPIRED, now=now)
            return None
        if job.kind == JobKind.BATCH and not _slot_free(job):
            return None
        claimed = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING,
            started_at=now,
            runner=runner,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
        )
        if claimed != 1:
            return None
        job_event_emit(
            job_id, step="start", status=JobStatus.RUNNING, message=f"Job started ({runner})"
        )
    job.refresh_from_db()
    return job


def job_finish(job_id: str, status: str, *, result: Any = None, error: str = "") -> bool:
    """End an active job with ``status``; False if it had already ended."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_terminal:
            return False
        return _finish(job, status, result=result, error=error)


def _finish(job: Job, status: str, *, result: Any = None, error: str = "", now: Any = None) -> bool:
    if status not in JobStatus.terminal():
        raise ValueError(f"{status} is not a terminal status")
    now = now or timezone.now()
    ended = Job.objects.filter(pk=job.pk, status__in=JobStatus.active()).update(
        status=status,
        finished_at=now,
        result=result if status == JobStatus.COMPLETE else None,
        error=error if status == JobStatus.ERROR else "",
    )
    if ended != 1:
        return False
    step, template = TERMINAL_EVENTS[status]
    message = template.format(error=error or "Job failed", ttl=job.ttl_seconds)
    job_event_emit(job.pk, step=step, status=status, message=message, terminal=True)
    transaction.on_commit(lambda: job_dispatch_pending())
    return True


def job_cancel(*, job: Job, actor: str, ip: str = "") -> str:
    """Cancel a job: a queued one ends now, a running one is signalled and its runner
    ends it. Returns the status the job is in afterwards (terminal ones are kept)."""
    if job.is_terminal:
        return job.status
    now = timezone.now()
    with transaction.atomic():
        Job.objects.filter(pk=job.pk, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now
        )
        audit_record(
            action="job.cancelled",
            actor=actor,
            workspace=job.workspace_id,
            target=job.pk,
            ip=ip,
            meta={"type": job.type},
        )
        if Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).exists():
            _finish(job, JobStatus.CANCELLED, now=now)
    from jobs import dispatchers

    transaction.on_commit(lambda: dispatchers.signal_cancel(job.pk, job.kind))
    return Job.objects.values_list("status", flat=True).get(pk=job.pk)


def job_dispatch_pending(limit: int | None = None) -> int:
    """Dispatch the oldest queued batch jobs that fit in the free slots."""
    free = (
        settings.MATRIX_MAX_CONCURRENT_JOBS
        - Job.objects.running().filter(kind=JobKind.BATCH).count()
    )
    if free <= 0:
        return 0
    queued = list(
        Job.objects.filter(status=JobStatus.QUEUED, kind=JobKind.BATCH)
        .order_by("created_at")
        .values_list("pk", flat=True)[: limit or free]
    )
    for job_id in queued:
        job_dispatch(job_id, JobKind.BATCH)
    return len(queued)


def job_await_terminal(job_id: str, status: str, *, timeout: float) -> str:
    """Poll until the job is terminal or ``timeout`` passes; the last status seen.

    DELETE uses it so the answer says how the job ended, as the original's did.
    """
    deadline = time.monotonic() + timeout
    while status not in JobStatus.terminal() and time.monotonic() < deadline:
        time.sleep(0.05)
        status = Job.objects.values_list("status", flat=True).get(pk=job_id)
    return status
