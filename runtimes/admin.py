"""Django admin for runtimes: this installation's process heartbeats, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from runtimes.models import ProcessHeartbeat


@admin.register(ProcessHeartbeat)
class ProcessHeartbeatAdmin(admin.ModelAdmin):
    """Each process writes its own row; operators only look."""

    list_display = ("role", "hostname", "pid", "started_at", "seen_at", "stopped_at")
    list_filter = ("role",)
    search_fields = ("hostname", "role", "instance")
    ordering = ("role", "-seen_at")
    readonly_fields = (
        "instance", "role", "hostname", "pid", "started_at", "seen_at", "stopped_at", "meta",
    )  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False
