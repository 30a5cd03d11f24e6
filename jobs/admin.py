"""Django admin for jobs: operators see every job and its events, and cancel jobs.

Only the job engine writes these rows, so nothing is edited or deleted here (retention
prunes finished jobs). The cancel action goes through ``jobs.services.job_cancel``, as
``DELETE /v1/jobs/{id}`` does: audited, and a running job's runner is told to stop.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from accounts.principals import admin_operator
from jobs.choices import JobStatus
from jobs.models import Job, JobEvent, ProcessHeartbeat
from jobs.services import job_cancel
from matrixcloud.lib.admin import ReadOnlyAdmin


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    """Every workspace's jobs, newest first; cancel active ones with the action."""

    list_display = (
        "id",
        "type",
        "status",
        "workspace",
        "created_at",
        "started_at",
        "finished_at",
        "runner",
    )
    list_filter = ("status", "kind", "type")
    search_fields = ("id", "type", "workspace__slug", "workspace__name", "runner", "error")
    list_select_related = ("workspace",)
    ordering = ("-created_at",)
    actions = ("cancel",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # needed for the action; fields stay read-only

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Job._meta.fields] + ["events"]

    @admin.display(description="events")
    def events(self, job: Job) -> str:
        url = reverse("admin:jobs_jobevent_changelist") + f"?job__id__exact={job.pk}"
        return format_html('<a href="{}">{} events</a>', url, job.last_seq)

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        active = queryset.select_related("workspace").filter(status__in=JobStatus.active())
        statuses = [
            job_cancel(job=job, actor=admin_operator(request, job.workspace)) for job in active
        ]
        ended = statuses.count(JobStatus.CANCELLED)
        stopping = len(statuses) - ended
        self.message_user(
            request,
            f"Cancelled {ended} job(s); asked the runners of {stopping} running job(s) to stop.",
            messages.SUCCESS,
        )


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    """Job events, read-only: what each job reported, in order."""

    list_display = ("job", "seq", "step", "status", "message", "terminal", "created_at")
    list_filter = ("status", "terminal")
    search_fields = ("job__id", "step", "message")
    list_select_related = ("job",)
    ordering = ("-created_at", "-seq")


@admin.register(ProcessHeartbeat)
class ProcessHeartbeatAdmin(ReadOnlyAdmin):
    """This installation's processes: each writes its own row; operators only look."""

    list_display = ("role", "hostname", "pid", "started_at", "seen_at", "stopped_at")
    list_filter = ("role",)
    search_fields = ("hostname", "role", "instance")
    ordering = ("role", "-seen_at")
    readonly_fields = (
        "instance", "role", "hostname", "pid", "started_at", "seen_at", "stopped_at", "meta",
    )  # fmt: skip
