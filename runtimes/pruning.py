"""``manage.py prune``: delete what has outlived its use, in bounded batches.

* join tokens that expired (or were revoked) more than ``token_grace`` ago;
* session tokens that are expired, idle-expired or revoked, and password-reset and
  email-verification links that expired or were used, all past ``token_grace``;
* finished jobs (terminal, ``finished_at`` older than ``MATRIX_RUNTIME_JOB_RETENTION_HOURS``)
  with their files in the data dir, as the janitor does;
* the events of finished jobs older than ``MATRIX_RUNTIME_LOG_RETENTION_HOURS``, except
  each job's terminal event, so a replay of a kept job still ends.

Running jobs, their events and the audit log (append-only, hash-chained) are never
touched. Every delete is a batch of at most :data:`BATCH` rows by primary key.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import EmailVerification, PasswordReset, SessionToken
from jobs.choices import JobStatus
from jobs.models import Job, JobEvent
from runtimes.models import JoinToken

BATCH = 1000
MAX_BATCHES = 10_000  # bounds a run at ten million rows per kind


def _delete_in_batches(
    queryset: QuerySet[Any], *, dry_run: bool, before: Callable[[list[Any]], None] | None = None
) -> int:
    if dry_run:
        return queryset.count()
    total = 0
    for _ in range(MAX_BATCHES):
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            break
        if before is not None:
            before(ids)
        queryset.model.objects.filter(pk__in=ids).delete()
        total += len(ids)
    return total


def _remove_job_files(ids: list[Any]) -> None:
    for job_id in ids:
        for area in ("jobs", "mcp"):
            shutil.rmtree(settings.MATRIX_DATA_DIR / area / str(job_id), ignore_errors=True)


def prune(
    *,
    now: datetime | None = None,
    token_grace: timedelta = timedelta(days=7),
    job_hours: int | None = None,
    log_hours: int | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete (or with ``dry_run`` count) what is past retention; counts per kind."""
    now = now or timezone.now()
    cutoff = now - token_grace
    job_hours = settings.MATRIX_JOB_RETENTION_HOURS if job_hours is None else job_hours
    log_hours = settings.MATRIX_LOG_RETENTION_HOURS if log_hours is None else log_hours
    counts = {
        "join_tokens": _delete_in_batches(
            JoinToken.objects.filter(Q(expires_at__lt=cutoff) | Q(revoked_at__lt=cutoff)),
            dry_run=dry_run,
        ),
        "session_tokens": _delete_in_batches(
            SessionToken.objects.filter(
                Q(expires_at__lt=cutoff) | Q(idle_expires_at__lt=cutoff) | Q(revoked_at__lt=cutoff)
            ),
            dry_run=dry_run,
        ),
    }
    for name, model in (
        ("password_resets", PasswordReset),
        ("email_verifications", EmailVerification),
    ):
        counts[name] = _delete_in_batches(
            model.objects.filter(Q(expires_at__lt=cutoff) | Q(used_at__lt=cutoff)), dry_run=dry_run
        )
    finished = Job.objects.filter(status__in=JobStatus.terminal())
    old_jobs = finished.filter(finished_at__lt=now - timedelta(hours=job_hours))
    counts["job_events"] = 0
    if log_hours > 0:
        # Events of jobs pruned below go with their job; counted there, not here.
        old_events = JobEvent.objects.filter(
            job__in=finished.filter(finished_at__lt=now - timedelta(hours=log_hours)),
            terminal=False,
        )
        if job_hours > 0:
            old_events = old_events.exclude(job__in=old_jobs)
        counts["job_events"] = _delete_in_batches(old_events, dry_run=dry_run)
    counts["jobs"] = 0
    if job_hours > 0:
        counts["jobs"] = _delete_in_batches(old_jobs, dry_run=dry_run, before=_remove_job_files)
    return counts
