"""Choices for the jobs app: the job state machine and event statuses."""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    """``queued → running → complete | error | expired | cancelled``; a queued job may
    also go straight to expired or cancelled."""

    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    COMPLETE = "complete", "complete"
    ERROR = "error", "error"
    EXPIRED = "expired", "expired"
    CANCELLED = "cancelled", "cancelled"

    @classmethod
    def active(cls) -> frozenset[str]:
        return frozenset({cls.QUEUED, cls.RUNNING})

    @classmethod
    def terminal(cls) -> frozenset[str]:
        return frozenset({cls.COMPLETE, cls.ERROR, cls.EXPIRED, cls.CANCELLED})


# The terminal event of each terminal status: (step, message template).
TERMINAL_EVENTS: dict[str, tuple[str, str]] = {
    JobStatus.COMPLETE: ("complete", "Job complete"),
    JobStatus.ERROR: ("error", "{error}"),
    JobStatus.EXPIRED: ("expire", "Job expired after {ttl} seconds"),
    JobStatus.CANCELLED: ("cancel", "Job cancelled"),
}


class JobKind(models.TextChoices):
    """Where a job type runs: a worker (batch) or a sandbox host (a live session)."""

    BATCH = "batch", "batch"
    SESSION = "session", "session"


class ProcessRole(models.TextChoices):
    """The roles of this installation's processes; each beats in ``jobs.heartbeats``."""

    WEB = "web", "web"
    WORKER = "worker", "worker"
    SANDBOX_HOST = "sandbox_host", "sandbox host"
