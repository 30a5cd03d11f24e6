"""Writes for the runtimes app."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from django.utils import timezone

from runtimes.models import ProcessHeartbeat


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
