"""``manage.py prune``'s mechanism: each app deletes what has outlived its use.

An app that keeps such data gives its AppConfig a ``prune(retention)`` method that
returns ``{kind: rows}``; :func:`prune_all` asks every installed app in turn. Every
delete is a batch of at most :data:`BATCH` rows by primary key, and nothing the audit
log or a running job needs is ever a candidate (each app's pruner says what it deletes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

BATCH = 1000
MAX_BATCHES = 10_000  # bounds a run at ten million rows per kind


@dataclass(frozen=True)
class Retention:
    """What a prune keeps: ended tokens for ``token_grace``, finished jobs for
    ``job_hours`` and their events for ``log_hours`` (0: keep them all)."""

    now: datetime
    token_grace: timedelta
    job_hours: int
    log_hours: int
    dry_run: bool

    @property
    def token_cutoff(self) -> datetime:
        return self.now - self.token_grace


def delete_in_batches(
    queryset: QuerySet[Any], *, dry_run: bool, before: Callable[[list[Any]], None] | None = None
) -> int:
    """Delete ``queryset`` in batches (``before`` sees each batch's ids first); with
    ``dry_run``, only count it."""
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


def prune_all(
    *,
    now: datetime | None = None,
    token_grace: timedelta = timedelta(days=7),
    job_hours: int | None = None,
    log_hours: int | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete (or with ``dry_run`` count) what is past retention, app by app; counts per
    kind, in the order of ``INSTALLED_APPS``."""
    retention = Retention(
        now=now or timezone.now(),
        token_grace=token_grace,
        job_hours=settings.MATRIX_JOB_RETENTION_HOURS if job_hours is None else job_hours,
        log_hours=settings.MATRIX_LOG_RETENTION_HOURS if log_hours is None else log_hours,
        dry_run=dry_run,
    )
    counts: dict[str, int] = {}
    for config in apps.get_app_configs():
        pruner = getattr(config, "prune", None)
        if callable(pruner):
            counts.update(pruner(retention))
    return counts
