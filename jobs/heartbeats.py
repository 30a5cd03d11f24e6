"""Heartbeats of this installation's processes: the home both the worker and the
sandbox host beat in, and what readiness, ``/v1/runtimes`` and the janitor read.

A process updates its own row (:class:`jobs.models.ProcessHeartbeat`) by its
``instance`` id every ``MATRIX_RUNTIME_HEARTBEAT_SECONDS``; three missed beats and it is
not live.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs.models import ProcessHeartbeat


def process_heartbeat_beat(*, instance: str, role: str, meta: dict[str, Any] | None = None) -> None:
    """Record that this process (``instance``) is alive, creating its row on first beat."""
    now = timezone.now()
    updated = ProcessHeartbeat.objects.filter(instance=instance).update(
        seen_at=now, stopped_at=None, **({"meta": meta} if meta is not None else {})
    )
    if updated == 0:
        ProcessHeartbeat.objects.create(
            instance=instance,
            role=role,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            seen_at=now,
            meta=meta or {},
        )


def process_heartbeat_stop(*, instance: str) -> None:
    """Mark this process as stopped cleanly, so it is not mistaken for a crash."""
    ProcessHeartbeat.objects.filter(instance=instance).update(stopped_at=timezone.now())


def new_instance_id(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def heartbeat_window() -> timedelta:
    """How recently a process must have beaten to count as live (three beats)."""
    return timedelta(seconds=3 * settings.MATRIX_HEARTBEAT_SECONDS)


def role_is_live(role: str) -> bool:
    """True when at least one running process of ``role`` beat within the window."""
    return ProcessHeartbeat.objects.live(heartbeat_window()).filter(role=role).exists()
