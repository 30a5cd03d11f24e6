"""Jobs: typed background jobs and their event streams."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from django.apps import AppConfig
from django.conf import settings

if TYPE_CHECKING:
    from matrixcloud.lib.pruning import Retention


class JobsConfig(AppConfig):
    """Jobs: typed background jobs and their event streams.

    Domain apps register their handlers in their own ``ready()``; modules named in
    ``MATRIX_RUNTIME_EXTRA_JOB_MODULES`` (e.g. the test suite's handlers) are imported
    here so every process (web, worker, host) knows the same types.
    """

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        for module in settings.MATRIX_EXTRA_JOB_MODULES:
            import_module(module)

    def prune(self, retention: Retention) -> dict[str, int]:
        """``manage.py prune`` for this app (see ``jobs.pruning``)."""
        from jobs.pruning import jobs_prune

        return jobs_prune(retention)

    def sweep(self) -> None:
        """The worker's periodic sweep for this app: the janitor (``jobs.janitor``)."""
        from jobs.janitor import janitor_sweep

        janitor_sweep()
