"""The worker's periodic sweeps: each app does its own background upkeep.

An app with upkeep to do (the jobs janitor, the accounts email outbox) gives its
AppConfig a ``sweep()`` method; ``manage.py worker`` calls :func:`sweep_all` every few
seconds and :func:`sweep_app` when a wake names the app (``matrixcloud.lib.wake``). A
sweep must be safe to run in several workers at once (conditional updates), and one
app's failure never skips another's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from django import db
from django.apps import apps

logger = logging.getLogger(__name__)


def _sweepers() -> list[tuple[str, Callable[[], Any]]]:
    found = []
    for config in apps.get_app_configs():
        sweep = getattr(config, "sweep", None)
        if callable(sweep):
            found.append((config.label, sweep))
    return found


def sweep_app(label: str) -> bool:
    """Run ``label``'s sweep; False if that app has none (nothing run)."""
    for name, sweep in _sweepers():
        if name == label:
            _run(name, sweep)
            return True
    return False


def sweep_all() -> list[str]:
    """Run every app's sweep, in the order of ``INSTALLED_APPS``; the labels run."""
    ran = []
    for name, sweep in _sweepers():
        _run(name, sweep)
        ran.append(name)
    return ran


def _run(name: str, sweep: Callable[[], Any]) -> None:
    try:
        sweep()
    except Exception:  # the next round may well succeed; the other apps still sweep
        logger.exception("the %s sweep failed", name)
        # A connection the database dropped (a restart) would fail every later round:
        # closed here, the next query connects again.
        with contextlib.suppress(Exception):
            db.connection.close()
