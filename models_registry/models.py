"""Model profiles (where a model comes from) and installations (a profile on a runtime)."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from accounts.models import Workspace
from matrixcloud.lib.ids import new_model_installation_id, new_model_profile_id
from models_registry.choices import InstallationStatus, InstallMode, ProfileStatus


class ProfileQuerySet(models.QuerySet["ModelProfile"]):
    def for_workspace(self, workspace: Workspace) -> ProfileQuerySet:
        return self.filter(workspace=workspace)


class ModelProfile(models.Model):
    """A model the workspace imported: its source (Hugging Face repo, URL, volume...),
    what is known about it, and how far its latest installation got."""

    id = models.CharField(
        primary_key=True, max_length=32, default=new_model_profile_id, editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    source_type = models.CharField(max_length=40, blank=True)
    source_uri = models.CharField(max_length=1000, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    external_id = models.CharField(max_length=300, blank=True)
    display_name = models.CharField(max_length=300, blank=True)
    task = models.CharField(max_length=100, blank=True)
    library = models.CharField(max_length=100, blank=True)
    license = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=ProfileStatus.choices, default=ProfileStatus.PROFILE_ONLY
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ProfileQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.display_name}"

    @property
    def is_huggingface(self) -> bool:
        return (
            self.source_type == "huggingface"
            or self.provider == "Hugging Face"
            or self.source_uri.startswith("hf:")
        )

    def set_status(self, status: str, error: str = "") -> None:
        now = timezone.now()
        ModelProfile.objects.filter(pk=self.pk).update(status=status, error=error, updated_at=now)
        self.status, self.error, self.updated_at = status, error, now


class InstallationQuerySet(models.QuerySet["ModelInstallation"]):
    def for_workspace(self, workspace: Workspace) -> InstallationQuerySet:
        return self.filter(workspace=workspace)


class ModelInstallation(models.Model):
    """One profile installed (or being installed) on a runtime by a ``model.attach``
    job; ``progress`` follows the bytes really on disk."""

    id = models.CharField(
        primary_key=True, max_length=32, default=new_model_installation_id, editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    profile = models.ForeignKey(
        ModelProfile, on_delete=models.SET_NULL, null=True, related_name="installations"
    )
    runtime_id = models.CharField(max_length=64)
    install_mode = models.CharField(
        max_length=20, choices=InstallMode.choices, default=InstallMode.PULL_FROM_SOURCE
    )
    serving_engine = models.CharField(max_length=40, blank=True)
    status = models.CharField(
        max_length=20, choices=InstallationStatus.choices, default=InstallationStatus.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0)
    local_path = models.CharField(max_length=1000, blank=True)
    endpoint_url = models.CharField(max_length=1000, blank=True)
    source_path = models.CharField(max_length=1000, blank=True)
    job_id = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = InstallationQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "-created_at"]),
            models.Index(fields=["job_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.status} {self.progress}%"

    def advance(self, status: str, progress: int | None = None, **fields: Any) -> bool:
        """Move an active installation on; False once it has failed or become ready
        (a late step never overwrites a recorded failure)."""
        changes: dict[str, Any] = {"status": status, "updated_at": timezone.now(), **fields}
        if progress is not None:
            changes["progress"] = max(0, min(100, progress))
        moved = ModelInstallation.objects.filter(
            pk=self.pk, status__in=InstallationStatus.active()
        ).update(**changes)
        if moved:
            for key, value in changes.items():
                setattr(self, key, value)
        return bool(moved)
