"""The janitor: ends what crashed or ran out of time, prunes what is old.

The jobs app's sweep (``JobsConfig.sweep``): every worker runs it every few seconds
(``manage.py worker``). Every action is a conditional transition, so several janitors
running at once do no harm, and a worker that was SIGKILLed has its jobs ended by any
peer (never run again: only a resumable job is queued again, to resume).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from jobs.choices import JobStatus
from jobs.models import Job
from jobs.pruning import job_files_remove
from jobs.runner import runner_gone
from jobs.services import job_finish, job_runner_lost

logger = logging.getLogger(__name__)
# A runner heart-beats its job every runner.HEARTBEAT_SECONDS (2 s).
STALE_AFTER = timedelta(seconds=20)
# A runner on this host whose process is gone needs only this much silence.
DEAD_RUNNER_AFTER = timedelta(seconds=6)
EXPIRY_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    orphaned: int
    expired: int
    pruned: int


def janitor_sweep() -> SweepReport:
    """End orphaned and overdue jobs, prune old ones."""
    now = timezone.now()
    orphaned = _end_orphans(now)
    expired = _end_expired(now)
    pruned = _prune(now)
    if orphaned or expired or pruned:
        logger.info("janitor: %s orphaned, %s expired, %s pruned", orphaned, expired, pruned)
    return SweepReport(orphaned, expired, pruned)


def _end_orphans(now: datetime) -> int:
    """Running jobs whose runner stopped heart-beating: the process died. Each goes by
    ``job_runner_lost`` (a resumable one is queued again, any other ends ``error``)."""
    ended = 0
    silent_jobs = Job.objects.filter(
        status=JobStatus.RUNNING, heartbeat_at__lt=now - DEAD_RUNNER_AFTER
    )
    for job in silent_jobs.only("pk", "runner", "heartbeat_at"):
        silence = now - job.heartbeat_at if job.heartbeat_at else STALE_AFTER
        if silence < STALE_AFTER and not runner_gone(job.runner):
            continue
        reason = (
            f"the process running this job ({job.runner or 'unknown'}) stopped "
            f"heart-beating {int(silence.total_seconds())} s ago; the job was interrupted"
        )
        ended += bool(job_runner_lost(job.pk, reason=reason))
    return ended


def _end_expired(now: datetime) -> int:
    """Jobs past their TTL that no runner ended (queued ones, or a stuck runner)."""
    ended = 0
    late = Job.objects.filter(status__in=JobStatus.active(), expires_at__lt=now - EXPIRY_GRACE)
    for job_id in late.values_list("pk", flat=True):
        ended += job_finish(job_id, JobStatus.EXPIRED)
    return ended


def _prune(now: datetime) -> int:
    hours = settings.MATRIX_JOB_RETENTION_HOURS
    if hours <= 0:
        return 0
    old = Job.objects.filter(
        status__in=JobStatus.terminal(), finished_at__lt=now - timedelta(hours=hours)
    )
    ids = list(old.values_list("pk", flat=True)[:1000])
    job_files_remove(ids)
    deleted, _ = Job.objects.filter(pk__in=ids).delete()
    return len(ids) if deleted else 0
