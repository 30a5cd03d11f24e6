"""Choices for the models registry: profile and installation statuses, install modes."""

from __future__ import annotations

from django.db import models


class ProfileStatus(models.TextChoices):
    """Where a model profile stands (the contract's enum; ``gated`` and ``incompatible``
    are kept for the console's filters)."""

    PROFILE_ONLY = "profile_only", "profile only"
    QUEUED = "queued", "queued"
    DOWNLOADING = "downloading", "downloading"
    INSTALLED = "installed", "installed"
    ATTACHED = "attached", "attached"
    READY = "ready", "ready"
    FAILED = "failed", "failed"
    GATED = "gated", "gated"
    INCOMPATIBLE = "incompatible", "incompatible"


class InstallationStatus(models.TextChoices):
    """``queued → checking → downloading → verifying → attached → ready``, or ``failed``."""

    QUEUED = "queued", "queued"
    CHECKING = "checking", "checking"
    DOWNLOADING = "downloading", "downloading"
    VERIFYING = "verifying", "verifying"
    ATTACHED = "attached", "attached"
    READY = "ready", "ready"
    FAILED = "failed", "failed"

    @classmethod
    def active(cls) -> frozenset[str]:
        return frozenset({cls.QUEUED, cls.CHECKING, cls.DOWNLOADING, cls.VERIFYING, cls.ATTACHED})


class InstallMode(models.TextChoices):
    """How an installation gets the model: download it, find it mounted, or use an
    OpenAI-compatible endpoint that already serves it."""

    PULL_FROM_SOURCE = "pull_from_source", "pull from source"
    MOUNT_VOLUME = "mount_volume", "mount volume"
    EXTERNAL_ENDPOINT = "external_endpoint", "external endpoint"
