"""Runtimes: registered remote runtimes and join tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Workspace
from matrixcloud.lib.ids import new_join_token_id, new_runtime_id
from runtimes.choices import RuntimeKind, RuntimeStatus


def offline_after() -> timedelta:
    """Silence after which a registered runtime counts as offline (90 s by default)."""
    return timedelta(seconds=settings.MATRIX_RUNTIME_OFFLINE_AFTER_SECONDS)


class JoinTokenQuerySet(models.QuerySet["JoinToken"]):
    def for_workspace(self, workspace: Workspace | None) -> JoinTokenQuerySet:
        """Tokens the workspace may see; ``None`` (the operator) sees all."""
        return self if workspace is None else self.filter(workspace=workspace)

    def active(self, now: datetime | None = None) -> JoinTokenQuerySet:
        """Not revoked, not expired, not used up: the tokens a runtime could still redeem."""
        return self.filter(
            revoked_at__isnull=True,
            expires_at__gt=now or timezone.now(),
            uses__lt=models.F("max_uses"),
        )


class JoinToken(models.Model):
    """A limited-use, expiring secret (``mxrt_…``) that admits runtimes to a workspace.

    Only the SHA-256 of the secret is stored. Redemption is one conditional UPDATE
    (``uses < max_uses``, not revoked, not expired), so concurrent registrations can
    never spend more uses than ``max_uses``.
    """

    id = models.CharField(
        primary_key=True, max_length=32, default=new_join_token_id, editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="join_tokens")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    label = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = JoinTokenQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["workspace", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(uses__lte=models.F("max_uses")), name="join_token_uses_lte_max"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.label or '(no label)'}"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())

    def is_active(self, now: datetime | None = None) -> bool:
        return not self.revoked and not self.is_expired(now) and self.uses < self.max_uses


class RuntimeQuerySet(models.QuerySet["Runtime"]):
    def for_workspace(self, workspace: Workspace | None) -> RuntimeQuerySet:
        """Runtimes the workspace may see; ``None`` (the operator) sees all."""
        return self if workspace is None else self.filter(workspace=workspace)

    def online(self, now: datetime | None = None) -> RuntimeQuerySet:
        """Runtimes whose last heartbeat is recent and did not say ``offline``."""
        since = (now or timezone.now()) - offline_after()
        return self.exclude(status=RuntimeStatus.OFFLINE).filter(last_seen_at__gt=since)


class Runtime(models.Model):
    """A remote runtime registered to a workspace with a join token.

    It proves itself with its runtime token (only the SHA-256 is stored), which the
    workspace can rotate or revoke. Each heartbeat records the status it reports, its
    capabilities and its resources (``gpu_memory_mb``, ``engines``, ``loaded_models``,
    ``free_disk_bytes``...). Silence for longer than the offline threshold makes it
    ``offline`` on read (:meth:`effective_status`), never by a write.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_runtime_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="runtimes")
    join_token = models.ForeignKey(
        JoinToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="runtimes"
    )
    name = models.CharField(max_length=200)
    mode = models.CharField(max_length=40, blank=True)
    kind = models.CharField(max_length=40, default=RuntimeKind.HF_SPACE)
    url = models.CharField(max_length=500, blank=True)
    hf_space = models.CharField(max_length=200, blank=True)
    region = models.CharField(max_length=100, blank=True)
    version = models.CharField(max_length=100, blank=True)
    caps = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=10, choices=RuntimeStatus.choices, default=RuntimeStatus.ONLINE
    )
    resources = models.JSONField(default=dict, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_rotated_at = models.DateTimeField(null=True, blank=True)
    token_revoked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = RuntimeQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.name}"

    def effective_status(self, now: datetime | None = None) -> str:
        """The stored status, or ``offline`` after the threshold without a heartbeat."""
        if self.status == RuntimeStatus.OFFLINE:
            return RuntimeStatus.OFFLINE
        if self.last_seen_at <= (now or timezone.now()) - offline_after():
            return RuntimeStatus.OFFLINE
        return self.status

    def is_online(self, now: datetime | None = None) -> bool:
        return self.effective_status(now) != RuntimeStatus.OFFLINE

    @property
    def token_revoked(self) -> bool:
        return self.token_revoked_at is not None

    def mark_seen(
        self,
        *,
        status: str,
        caps: list[str] | None,
        resources: dict[str, Any] | None,
        version: str | None = None,
    ) -> None:
        """Record one heartbeat on this row (a single UPDATE by id, fields as given)."""
        now = timezone.now()
        changes: dict[str, Any] = {"status": status, "last_seen_at": now, "updated_at": now}
        if caps is not None:
            changes["caps"] = caps
        if resources is not None:
            changes["resources"] = resources
        if version:
            changes["version"] = version
        Runtime.objects.filter(pk=self.pk).update(**changes)
        for field, value in changes.items():
            setattr(self, field, value)
