"""Writes for jobs: create, claim, finish, cancel, dispatch.

Every transition is a conditional update on ``status`` (rows != 1 means another
process won), and every terminal transition emits exactly one terminal event. The job
row is the queue: a queued batch job waits in its row until a worker's claim loop
claims it (``jobs_claim_waiting``); dispatching it only wakes the workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Min
from django.utils import timezone
from pydantic import ValidationError

from accounts.audit import audit_record
from accounts.principals import Actor
from jobs import registry
from jobs.choices import TERMINAL_EVENTS, JobKind, JobStatus
from jobs.events import job_event_emit, storable
from jobs.handlers import BaseHandler, JobParams
from jobs.models import Job, JobSlots
from matrixcloud.errors import BadRequest, UnprocessableEntity
from matrixcloud.lib.backoff import Backoff

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


@dataclass(frozen=True)
class Lifetime:
    """How long a new job may live: ``ttl_seconds`` and ``expires_at``, and for a job
    timed by progress the hard cap ``deadline_at`` (``ttl_seconds`` is then the time
    allowed without progress, counted from the claim)."""

    ttl_seconds: int
    expires_at: datetime
    deadline_at: datetime | None


def job_lifetime(handler: type[BaseHandler], ttl_seconds: int, now: datetime) -> Lifetime:
    """The lifetime of a job of ``handler``'s type created ``now``; ``ttl_seconds`` is
    what the client asked for (already checked), 0 for the default."""
    if not handler.timed_by_progress:
        ttl = ttl_seconds or settings.MATRIX_MAX_TTL_SECONDS
        return Lifetime(ttl, now + timedelta(seconds=ttl), None)
    window = ttl_seconds or settings.MATRIX_MODEL_STALL_SECONDS
    deadline = now + timedelta(seconds=settings.MATRIX_MODEL_MAX_SECONDS)
    # Queued, it makes no progress yet: it waits for a slot as long as any job may.
    queued_for = timedelta(seconds=max(window, settings.MATRIX_MAX_TTL_SECONDS))
    return Lifetime(window, min(now + queued_for, deadline), deadline)


def payload_params(job_type: str, payload: dict[str, Any]) -> JobParams:
    """``payload`` read by the type's params model; a 422 naming the field (its cause
    is the ``ValidationError``)."""
    handler = registry.handler_for(job_type)
    if handler is None:
        raise BadRequest(f'unknown job type: "{job_type}"')
    try:
        return handler.Params.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["payload", *(str(part) for part in first["loc"])])
        raise UnprocessableEntity(f"{where}: {first['msg']}") from exc


def job_enqueue(
    *,
    actor: Actor,
    job_type: str,
    payload: dict[str, Any] | None,
    ttl_seconds: int | None,
    checked: bool = False,
    within: Callable[[Job], None] | None = None,
) -> Job:
    """Validate, write the job of the actor's workspace and its ``queue`` event, and
    dispatch it after commit. ``checked``: the caller has read ``payload`` with the
    type's Params model already (with its own messages), so it is not read again;
    ``within``: more rows to write in the job's transaction (a session's row)."""
    workspace = actor.workspace
    handler = registry.handler_for(job_type)
    if handler is None:
        raise BadRequest(f'unknown job type: "{job_type}"')
    ttl = ttl_resolve(ttl_seconds)
    payload = payload or {}
    if not checked:
        payload_params(job_type, payload)
    handler.admit(actor=actor, payload=payload)
    now = timezone.now()
    lifetime = job_lifetime(handler, ttl if ttl_seconds else 0, now)
    with transaction.atomic():
        handler.reserve(workspace=workspace)
        job = Job.objects.create(
            workspace=workspace,
            created_by=actor.user,
            type=job_type,
            kind=handler.kind,
            payload=payload,
            ttl_seconds=lifetime.ttl_seconds,
            created_at=now,
            expires_at=lifetime.expires_at,
            deadline_at=lifetime.deadline_at,
        )
        # Registered before the queue event's publish, so the worker hears of the job
        # first (streams read rows, so the order of live pushes does not matter).
        transaction.on_commit(lambda: job_dispatch(job.pk, job.kind))
        job_event_emit(
            job.pk,
            step="queue",
            status=JobStatus.QUEUED,
            message="Job queued",
            data={"type": job_type},
        )
        audit_record(
            action="job.created",
            actor=actor.id,
            workspace=workspace,
            target=job.pk,
            ip=actor.ip,
            meta={"type": job_type, "ttl_seconds": ttl},
        )
        if within is not None:
            within(job)
    return job


def job_dispatch(job_id: str, kind: str) -> None:
    """Tell whoever runs its kind that a job is queued (the workers, or the sandbox hosts)."""
    from jobs import dispatchers

    dispatchers.dispatch(job_id, kind)


def _lock_slots() -> None:
    """Serialise claims of batch jobs, so two workers never both take the last free slot
    (each counts the running jobs, then claims). Held only by a claim's own short
    transaction, and only once there is a job to claim; finishes never take it (a slot
    a finish frees is found by the wake that follows its commit)."""
    JobSlots.objects.select_for_update().get_or_create(pk=1)


def _running_per_workspace() -> dict[str, int]:
    rows = (
        Job.objects.running()
        .filter(kind=JobKind.BATCH)
        .values("workspace_id")
        .annotate(n=Count("pk"))
        .values_list("workspace_id", "n")
    )
    return dict(rows)


def _slot_free(job: Job) -> bool:
    running = _running_per_workspace()
    if sum(running.values()) >= settings.MATRIX_MAX_CONCURRENT_JOBS:
        return False
    return running.get(job.workspace_id, 0) < settings.MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE


def job_claim(job_id: str, *, runner: str) -> Job | None:
    """Move the queued job ``job_id`` to running for ``runner`` if a slot is free; else
    None (it stays queued, and a claim loop takes it when a slot frees). Claiming a job
    that is not queued is a no-op, so a job is started once however often it is asked."""
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).first()
        if job is None:
            return None
        if job.expires_at <= now:
            _finish(job, JobStatus.EXPIRED, now=now)
            return None
        if job.kind == JobKind.BATCH:
            _lock_slots()
            if not _slot_free(job):
                return None
        started = _start(job, runner=runner, now=now)
    return started


def jobs_claim_waiting(*, runner: str, room: int) -> list[Job]:
    """Claim up to ``room`` of the oldest waiting batch jobs that fit in the free slots,
    for ``runner``: a worker's claim loop, with ``room`` idle runner threads.

    Per-workspace limits are respected, so a workspace at its limit never holds up
    another workspace's jobs. One short transaction, and none at all when nothing waits
    (the idle poll is one indexed read).
    """
    waiting = Job.objects.filter(status=JobStatus.QUEUED, kind=JobKind.BATCH)
    if room <= 0 or not waiting.exists():
        return []
    now = timezone.now()
    claimed: list[Job] = []
    with transaction.atomic():
        _lock_slots()
        running = _running_per_workspace()
        free = min(room, settings.MATRIX_MAX_CONCURRENT_JOBS - sum(running.values()))
        if free <= 0:
            return []
        for job in Job.objects.filter(pk__in=_pick_waiting(running, free)).order_by("created_at"):
            if job.expires_at <= now:
                _finish(job, JobStatus.EXPIRED, now=now)
                continue
            started = _start(job, runner=runner, now=now)
            if started is not None:
                claimed.append(started)
    return claimed


def _start(job: Job, *, runner: str, now: datetime) -> Job | None:
    """The claim itself: one conditional update, queued to running, and its event."""
    timing: dict[str, Any] = {}
    if job.deadline_at is not None:  # timed by progress: the clock starts now
        window = timedelta(seconds=job.ttl_seconds)
        timing = {"progress_at": now, "expires_at": min(now + window, job.deadline_at)}
    claimed = Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING,
        started_at=job.started_at or now,
        runner=runner,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        **timing,
    )
    if claimed != 1:
        return None
    attempt = job.attempts + 1
    message = "Job started" if attempt == 1 else f"Job started again (attempt {attempt})"
    data = {"attempt": attempt} if attempt > 1 else None
    job_event_emit(job.pk, step="start", status=JobStatus.RUNNING, message=message, data=data)
    job.refresh_from_db()
    return job


def job_finish(job_id: str, status: str, *, result: Any = None, error: str = "") -> bool:
    """End an active job with ``status``; False if it had already ended."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_terminal:
            return False
        return _finish(job, status, result=result, error=error)


def _finish(
    job: Job, status: str, *, result: Any = None, error: str = "", now: datetime | None = None
) -> bool:
    if status not in JobStatus.terminal():
        raise ValueError(f"{status} is not a terminal status")
    now = now or timezone.now()
    error = (error or "Job failed") if status == JobStatus.ERROR else ""
    ended = Job.objects.filter(pk=job.pk, status__in=JobStatus.active()).update(
        status=status,
        finished_at=now,
        # What a handler hands back may hold text PostgreSQL cannot store (a NUL in a
        # tool's output): stored with U+FFFD, so the job still ends.
        result=storable(result) if status == JobStatus.COMPLETE else None,
        error=storable(error),
    )
    if ended != 1:
        return False
    step, template = TERMINAL_EVENTS[status]
    message = template.format(error=error, ttl=job.ttl_seconds)
    if status == JobStatus.EXPIRED and job.deadline_at is not None:
        message = _expired_by_progress(job, now)
    job_event_emit(job.pk, step=step, status=status, message=message, terminal=True)
    handler = registry.handler_for(job.type)
    if handler is not None:
        handler.ended(job.pk, status, error)  # in this transaction: it ends with the job
    if job.kind == JobKind.BATCH and job.status == JobStatus.RUNNING:
        transaction.on_commit(_slot_freed)
    return True


def _slot_freed() -> None:
    """A running batch job ended: its slot is free for the job waiting longest."""
    from jobs import dispatchers

    dispatchers.slot_freed()


def _expired_by_progress(job: Job, now: datetime) -> str:
    """The terminal message of a job timed by progress that ran out of time."""
    if job.status == JobStatus.QUEUED:
        return f"Job expired after {int((now - job.created_at).total_seconds())} seconds queued"
    if job.deadline_at is not None and now >= job.deadline_at:
        cap = int((job.deadline_at - job.created_at).total_seconds())
        return f"Job expired: it reached its {cap} s cap (MATRIX_RUNTIME_MODEL_MAX_SECONDS)"
    return f"Job expired: no progress for {job.ttl_seconds} seconds"


def job_runner_lost(job_id: str, *, reason: str) -> str:
    """The process running ``job_id`` is gone (its worker died, or its lease lapsed):
    the one rule for what happens next. A resumable job (``BaseHandler.resumable``) with
    attempts left, time left and no cancel request is queued again, to resume from what
    the lost run left; any other job ends ``error`` with ``reason``. Returns the status
    the job is in afterwards, or "" if it was no longer running (nothing done)."""
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != JobStatus.RUNNING:
            return ""
        handler = registry.handler_for(job.type)
        maximum = settings.MATRIX_JOB_MAX_ATTEMPTS
        if job.cancel_requested_at is not None or handler is None or not handler.resumable:
            _finish(job, JobStatus.ERROR, error=reason, now=now)
            return JobStatus.ERROR
        if job.attempts >= maximum:
            _finish(job, JobStatus.ERROR, error=f"{reason} (attempt {job.attempts} of {maximum})")
            return JobStatus.ERROR
        if (job.deadline_at or job.expires_at) <= now:
            _finish(job, JobStatus.EXPIRED, now=now)
            return JobStatus.EXPIRED
        Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(
            status=JobStatus.QUEUED, runner="", heartbeat_at=None
        )
        job_event_emit(
            job_id,
            step="retry",
            status=JobStatus.QUEUED,
            message=(
                f"{reason}; queued again to resume where it stopped "
                f"(attempt {job.attempts + 1} of {maximum})"
            ),
            data={"attempt": job.attempts + 1, "max_attempts": maximum},
        )
        transaction.on_commit(lambda: job_dispatch(job_id, job.kind))
    return JobStatus.QUEUED


def job_cancel(*, job: Job, actor: Actor) -> str:
    """Cancel a job: a queued one ends now, a running one is signalled and its runner
    ends it. Returns the status the job is in afterwards (terminal ones are kept).

    The row is locked first, so a worker cannot claim the job between the check and
    the change; only the first request of an active job is audited.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal:
            return locked.status
        if locked.cancel_requested_at is None:
            Job.objects.filter(pk=job.pk).update(cancel_requested_at=now)
            audit_record(
                action="job.cancelled",
                actor=actor.id,
                workspace=locked.workspace_id,
                target=job.pk,
                ip=actor.ip,
                meta={"type": locked.type, "status": locked.status},
            )
        if locked.status == JobStatus.QUEUED:
            _finish(locked, JobStatus.CANCELLED, now=now)
    from jobs import dispatchers

    transaction.on_commit(lambda: dispatchers.signal_cancel(job.pk, job.kind))
    return Job.objects.values_list("status", flat=True).get(pk=job.pk)


def _pick_waiting(running: dict[str, int], free: int) -> list[str]:
    """Up to ``free`` waiting job ids, oldest workspace first, within each limit."""
    per_workspace = settings.MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE
    waiting = Job.objects.filter(status=JobStatus.QUEUED, kind=JobKind.BATCH)
    workspaces = (
        waiting.values("workspace_id").annotate(oldest=Min("created_at")).order_by("oldest")
    )
    chosen: list[str] = []
    for row in workspaces:
        room = min(per_workspace - running.get(row["workspace_id"], 0), free - len(chosen))
        if room > 0:
            ids = waiting.filter(workspace_id=row["workspace_id"]).order_by("created_at")
            chosen += ids.values_list("pk", flat=True)[:room]
        if len(chosen) >= free:
            break
    return chosen


# A stopped sandbox usually ends within a few milliseconds: look soon, then less often
# (2, 4, 8, ... ms, at most 50 ms apart: about ten reads in the first half second).
AWAIT_FIRST_PAUSE = 0.002
AWAIT_MAX_PAUSE = 0.05


def job_await_terminal(job_id: str, status: str, *, timeout: float) -> str:
    """Poll until the job is terminal or ``timeout`` passes; the last status seen.

    DELETE uses it so the answer says how the job ended, as the original's did
    (docs/COMPATIBILITY.md#c-08).
    """
    pauses = Backoff(AWAIT_FIRST_PAUSE, AWAIT_MAX_PAUSE, total=timeout)
    while status not in JobStatus.terminal() and (pause := next(pauses, None)) is not None:
        time.sleep(pause)
        status = Job.objects.values_list("status", flat=True).get(pk=job_id)
    return status
