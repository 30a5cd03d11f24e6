"""Jobs and their events: the durable record of every piece of background work."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Workspace
from jobs.choices import JobKind, JobStatus, ProcessRole
from matrixcloud.lib.ids import new_job_id


class JobQuerySet(models.QuerySet["Job"]):
    def for_workspace(self, workspace: Workspace | None) -> JobQuerySet:
        """Jobs the workspace may see; ``None`` (the operator) sees all."""
        return self if workspace is None else self.filter(workspace=workspace)

    def active(self) -> JobQuerySet:
        return self.filter(status__in=JobStatus.active())

    def running(self) -> JobQuerySet:
        return self.filter(status=JobStatus.RUNNING)


class Job(models.Model):
    """One typed job: its payload, lifetime, state, result, and who runs it.

    The row is the queue and the truth: a queued row waits for a worker's claim, and
    claims and terminal transitions are conditional updates on ``status``, so exactly
    one process starts a job and exactly one terminal status wins. ``runner`` and
    ``heartbeat_at`` let the janitor find work whose process died. ``attempts`` counts
    claims: a resumable job whose runner died is queued again until it reaches the
    maximum.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_job_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    type = models.CharField(max_length=64)
    kind = models.CharField(max_length=10, choices=JobKind.choices, default=JobKind.BATCH)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    ttl_seconds = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    runner = models.CharField(max_length=128, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Jobs timed by progress (model downloads): ``expires_at`` moves with each progress,
    # ``ttl_seconds`` is the time allowed without any, and ``deadline_at`` the hard cap.
    progress_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0)

    objects = JobQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "-created_at"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["status", "heartbeat_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.type} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in JobStatus.terminal()

    def expired_at(self, now: datetime) -> bool:
        return now >= self.expires_at


class JobEvent(models.Model):
    """One event of a job, numbered by a per-job sequence (the SSE ``id:``).

    A stream replays rows after ``Last-Event-ID`` and then follows live pushes from
    the bus, de-duplicated by ``seq``; if the bus drops a message nothing is lost.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    step = models.CharField(max_length=64)
    status = models.CharField(max_length=16)
    message = models.TextField()
    data = models.JSONField(null=True, blank=True)
    terminal = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "seq"], name="jobs_event_seq_once"),
        ]
        ordering = ["job", "seq"]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.seq} {self.step}/{self.status}"

    def as_wire(self) -> dict[str, Any]:
        """The event as clients see it: ``{step, status, message, data?}``."""
        event: dict[str, Any] = {"step": self.step, "status": self.status, "message": self.message}
        if self.data:
            event["data"] = self.data
        return event


class JobSlots(models.Model):
    """The single row locked while a job is claimed, so concurrency limits hold."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)

    def __str__(self) -> str:
        return "job slots"


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
        db_table = "runtimes_processheartbeat"  # its first home; kept, with its rows
        indexes = [models.Index(fields=["role", "seen_at"], name="runtimes_pr_role_4e1b47_idx")]

    def __str__(self) -> str:
        return f"{self.role} {self.hostname}:{self.pid}"
