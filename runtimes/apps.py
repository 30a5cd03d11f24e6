"""Runtimes: this installation, registered remote runtimes, join tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from matrixcloud.lib.pruning import Retention


class RuntimesConfig(AppConfig):
    """Runtimes: this installation, registered remote runtimes, join tokens."""

    name = "runtimes"
    default_auto_field = "django.db.models.BigAutoField"

    def prune(self, retention: Retention) -> dict[str, int]:
        """``manage.py prune`` for this app (see ``runtimes.pruning``)."""
        from runtimes.pruning import runtimes_prune

        return runtimes_prune(retention)
