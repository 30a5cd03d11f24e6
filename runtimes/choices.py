"""Choices for the runtimes app."""

from django.db import models


class RuntimeStatus(models.TextChoices):
    """What a remote runtime says about itself in a heartbeat (a fixed set).

    ``offline`` is also what a listing shows for a runtime that has been silent for
    longer than the offline threshold; that is computed on read, never stored.
    """

    ONLINE = "online", "online"
    IDLE = "idle", "idle"
    BUSY = "busy", "busy"
    DEGRADED = "degraded", "degraded"
    DRAINING = "draining", "draining"
    OFFLINE = "offline", "offline"


class RuntimeKind(models.TextChoices):
    """How a remote runtime is hosted (free-form in the original; ``hf-space`` by default).

    Kept on purpose: docs/COMPATIBILITY.md#c-13.
    """

    HF_SPACE = "hf-space", "Hugging Face Space"
    SELF_HOSTED = "self-hosted", "self-hosted"
    MATRIXCLOUD = "matrixcloud", "MatrixCloud installation"
