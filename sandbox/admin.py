"""Django admin for sandboxes: operators see every session and tool call, and stop sessions.

Only the services and the sandbox host write these rows, so nothing is edited here.
The stop action goes through ``sandbox.services.sandbox_stop`` (the job engine's cancel),
as ``DELETE /v1/sandbox/sessions/{id}`` does: audited, and the host stops the server.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.principals import admin_operator
from jobs.choices import JobStatus
from matrixcloud.lib.admin import ReadOnlyAdmin
from sandbox.models import SandboxSession, ToolCall, ToolFingerprint
from sandbox.services import sandbox_stop


@admin.register(SandboxSession)
class SandboxSessionAdmin(ReadOnlyAdmin):
    """Every workspace's sandbox sessions, newest first; stop live ones with the action."""

    list_display = ("id", "job", "status", "workspace", "start_command", "created_at", "ready_at")
    list_filter = ("job__status", "job__type", "allow_network")
    search_fields = ("id", "job__id", "start_command", "workspace__slug", "workspace__name")
    list_select_related = ("job", "workspace")
    ordering = ("-created_at",)
    actions = ("stop",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # needed for the action; fields stay read-only

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in SandboxSession._meta.fields]

    @admin.display(description="status", ordering="job__status")
    def status(self, session: SandboxSession) -> str:
        return session.job.status

    @admin.action(description="Stop the selected sandbox sessions")
    def stop(self, request: HttpRequest, queryset: QuerySet[SandboxSession]) -> None:
        live = queryset.select_related("job", "workspace").filter(
            job__status__in=JobStatus.active()
        )
        statuses = [
            sandbox_stop(session=session, actor=admin_operator(request, session.workspace))
            for session in live
        ]
        ended = statuses.count(JobStatus.CANCELLED)
        self.message_user(
            request,
            f"Stopped {ended} queued session(s); asked the hosts of "
            f"{len(statuses) - ended} running session(s) to stop.",
            messages.SUCCESS,
        )


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdmin):
    """Tool calls, read-only: who called which tool, how it went (arguments redacted)."""

    list_display = ("id", "tool", "outcome", "duration_ms", "session_ref", "actor", "started_at")
    list_filter = ("outcome",)
    search_fields = ("id", "tool", "session_ref", "actor", "workspace__slug", "error")
    list_select_related = ("workspace",)
    ordering = ("-started_at",)


@admin.register(ToolFingerprint)
class ToolFingerprintAdmin(ReadOnlyAdmin):
    """The tools each command last advertised in each workspace, read-only."""

    list_display = ("workspace", "command_key", "updated_at")
    search_fields = ("command_key", "workspace__slug")
    list_select_related = ("workspace",)
    ordering = ("-updated_at",)
