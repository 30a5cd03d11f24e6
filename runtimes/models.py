"""Runtimes: the processes of this installation and (later) registered remote runtimes."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

from runtimes.choices import ProcessRole


class ProcessHeartbeatQuerySet(models.QuerySet["ProcessHeartbeat"]):
    def live(self, within: timedelta) -> ProcessHeartbeatQuerySet:
        return self.filter(seen_at__gte=timezone.now() - within, stopped_at__isnull=True)


class ProcessHeartbeat(models.Model):
    """One process of this installation (worker, sandbox host, web) and when it last beat.

    ``/v1/ready`` and ``/v1/runtimes`` read these rows; the janitor uses them to find
    work whose process died. A process updates its own row by ``instance`` id.
    """

    instance = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=20, choices=ProcessRole.choices)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    meta = models.JSONField(default=dict, blank=True)

    objects = ProcessHeartbeatQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["role", "seen_at"])]

    def __str__(self) -> str:
        return f"{self.role} {self.hostname}:{self.pid}"
