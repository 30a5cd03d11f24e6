"""What ``manage.py prune`` and the janitor delete of the jobs app: finished jobs past
``MATRIX_RUNTIME_JOB_RETENTION_HOURS`` with their files in the data dir, and the events
of finished jobs past ``MATRIX_RUNTIME_LOG_RETENTION_HOURS``, except each job's terminal
event, so a replay of a kept job still ends. Running jobs and their events are never
touched."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings

from jobs.choices import JobStatus
from jobs.models import Job, JobEvent
from matrixcloud.lib.pruning import Retention, delete_in_batches

JOB_AREAS = ("jobs", "mcp")  # data-dir areas that hold a directory per job


def job_files_remove(job_ids: Iterable[object]) -> None:
    """Remove what each job left in the data dir (its work dir, its MCP scratch)."""
    for job_id in job_ids:
        for area in JOB_AREAS:
            shutil.rmtree(settings.MATRIX_DATA_DIR / area / str(job_id), ignore_errors=True)


def jobs_prune(retention: Retention) -> dict[str, int]:
    finished = Job.objects.filter(status__in=JobStatus.terminal())
    old_jobs = finished.filter(finished_at__lt=retention.now - timedelta(hours=retention.job_hours))
    counts = {"job_events": 0, "jobs": 0}
    if retention.log_hours > 0:
        # Events of jobs pruned below go with their job; counted there, not here.
        quiet = finished.filter(
            finished_at__lt=retention.now - timedelta(hours=retention.log_hours)
        )
        old_events = JobEvent.objects.filter(job__in=quiet, terminal=False)
        if retention.job_hours > 0:
            old_events = old_events.exclude(job__in=old_jobs)
        counts["job_events"] = delete_in_batches(old_events, dry_run=retention.dry_run)
    if retention.job_hours > 0:
        counts["jobs"] = delete_in_batches(
            old_jobs, dry_run=retention.dry_run, before=job_files_remove
        )
    return counts
