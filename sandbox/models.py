"""Sandbox sessions, their tool calls, and the tool fingerprints of each command."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Workspace
from jobs.models import Job
from matrixcloud.lib.ids import new_sandbox_id, new_tool_call_id
from sandbox.choices import ToolCallOutcome


def command_key(argv: Sequence[str]) -> str:
    """sha256 (hex) of the argv as canonical JSON: the same command, the same key."""
    return hashlib.sha256(json.dumps(list(argv), separators=(",", ":")).encode()).hexdigest()


class WorkspaceQuerySet(models.QuerySet[Any]):
    """Tenant rows: ``for_workspace(None)`` (the operator) sees every workspace."""

    def for_workspace(self, workspace: Workspace | None) -> WorkspaceQuerySet:
        return self if workspace is None else self.filter(workspace=workspace)


class SandboxSession(models.Model):
    """One sandbox: an MCP server started for a ``mcp.test`` (or ``mcp.run``/``tool.run``)
    job, with what it was started with and what it advertised.

    The job is the lifecycle (status, TTL, events); this row is what the sandbox API
    adds: the public ``sbx_`` id, the validated argv, the env as given (secret
    *references* only, never resolved values), the tool list in the contract's shape
    and the server's own description. A host writes ``ready_at`` once the tools are
    listed and ``stopped_at`` once the process is gone.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_sandbox_id, editable=False)
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="sandbox_session")
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="sandbox_sessions"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    start_command = models.TextField()
    argv = models.JSONField(default=list)
    env = models.JSONField(default=dict, blank=True)
    allow_network = models.BooleanField(default=False)
    # The allowlist its egress proxy enforced (sandbox/egress), and how many connections
    # that proxy refused.
    egress_allow = models.JSONField(default=list, blank=True)
    egress_denied = models.PositiveIntegerField(default=0)
    tools = models.JSONField(default=list, blank=True)
    server_info = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.id} ({self.job_id})"

    @property
    def ready(self) -> bool:
        return self.ready_at is not None


class ToolCall(models.Model):
    """One tool call through the API: who, which tool, redacted arguments, how it went.

    The audit trail and the usage meter read these rows. Arguments whose key looks like
    a secret are stored redacted; the result itself is not stored, only its size.
    ``session`` is kept loose (SET_NULL) and ``session_ref`` keeps its id, so pruning
    old jobs and sessions leaves the call history.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_tool_call_id, editable=False)
    session = models.ForeignKey(
        SandboxSession,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tool_calls",
    )
    session_ref = models.CharField(max_length=32)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tool_calls")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor = models.CharField(max_length=254)
    tool = models.CharField(max_length=256)
    arguments = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=16, choices=ToolCallOutcome.choices)
    error = models.TextField(blank=True)
    result_bytes = models.PositiveIntegerField(default=0)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "-started_at"]),
            models.Index(fields=["session_ref", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.tool} {self.outcome}"


class ToolFingerprint(models.Model):
    """The tools a command last advertised in a workspace, as ``{name: fingerprint}``.

    ``command_key`` is :func:`command_key` of the argv. A session whose server
    advertises something else emits a ``tools_changed`` event naming the difference.
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="tool_fingerprints"
    )
    command_key = models.CharField(max_length=64)
    fingerprints = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "command_key"], name="sandbox_fingerprint_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.workspace_id} {self.command_key[:12]} ({len(self.fingerprints)} tools)"
