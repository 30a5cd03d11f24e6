"""``manage.py prune``: delete expired tokens and sessions, old finished jobs and events."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand

from matrixcloud.lib.pruning import prune_all


class Command(BaseCommand):
    """Delete what has outlived its use, asking each app (``matrixcloud.lib.pruning``):
    expired or revoked join tokens, sessions and one-time links past a grace period
    (``accounts.pruning``, ``runtimes.pruning``), finished jobs past
    ``MATRIX_RUNTIME_JOB_RETENTION_HOURS`` and their events past
    ``MATRIX_RUNTIME_LOG_RETENTION_HOURS`` (``jobs.pruning``).
    Safe to run at any time, e.g. from cron."""

    help = "Delete expired tokens and sessions, and finished jobs and events past retention."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--token-grace-days",
            type=int,
            default=7,
            help="keep ended tokens and sessions this many days (default 7)",
        )
        parser.add_argument(
            "--job-hours", type=int, help="override MATRIX_RUNTIME_JOB_RETENTION_HOURS (0: keep)"
        )
        parser.add_argument(
            "--log-hours", type=int, help="override MATRIX_RUNTIME_LOG_RETENTION_HOURS (0: keep)"
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        counts = prune_all(
            token_grace=timedelta(days=max(options["token_grace_days"], 0)),
            job_hours=options["job_hours"],
            log_hours=options["log_hours"],
            dry_run=options["dry_run"],
        )
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb}: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()))
