"""Wire shapes of ``/v1/jobs``: the create request, job snapshots and events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers

from matrixcloud.api.serializers import SparseSerializer, TimeField

# Documented, not enforced here: the job engine decides which types exist (400 otherwise).
# The contract's enum plus the two internal types the original also accepts
# (docs/COMPATIBILITY.md#c-08).
DOCUMENTED_JOB_TYPES = [
    "mcp.test",
    "mcp.run",
    "model.inspect",
    "model.pull",
    "model.preload",
    "agent.run",
    "tool.run",
    "model.attach",
    "matrixshell.install",
]
JOB_STATUSES = ["queued", "running", "complete", "error", "expired", "cancelled"]
EVENT_STATUSES = ["queued", "start", "ok", "error", "running", "expired", "cancelled", "complete"]


@extend_schema_field({"type": "string", "enum": DOCUMENTED_JOB_TYPES})
class JobTypeField(serializers.CharField):
    """A job type: any string passes here; the job engine rejects unknown types."""


class CreateJobSerializer(serializers.Serializer):
    """Body of a job creation: its type, lifetime and type-specific payload."""

    type = JobTypeField(help_text="The job type; unknown types are a 400.")
    ttl_seconds = serializers.IntegerField(
        required=False,
        help_text="Lifetime in seconds; 0 or absent means the maximum, above it is a 422.",
    )
    payload = serializers.DictField(
        required=False, help_text="Type-specific parameters, checked against the type's schema."
    )


def job_events_url(job: Any) -> str:
    return f"/v1/jobs/{job.pk}/events"


class CreateJobResponseSerializer(serializers.Serializer):
    """Answer to a job creation (202): where to follow it (renders the new ``Job``)."""

    job_id = serializers.CharField(source="pk")
    status = serializers.CharField()
    events_url = serializers.SerializerMethodField(help_text="/v1/jobs/<job_id>/events")

    @extend_schema_field(OpenApiTypes.STR)
    def get_events_url(self, job: Any) -> str:
        return job_events_url(job)


class JobSerializer(SparseSerializer):
    """A job snapshot: type, status, lifetime, result or error (renders a ``Job``; a
    listed one loads only ``jobs.selectors.SNAPSHOT_FIELDS``)."""

    job_id = serializers.CharField(source="pk")
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=JOB_STATUSES)
    created_at = TimeField()
    expires_at = TimeField()
    result = serializers.JSONField(allow_null=True, help_text="The type's result; null until done.")
    workspace_id = serializers.CharField()
    events_url = serializers.SerializerMethodField(help_text="/v1/jobs/<job_id>/events")
    started_at = TimeField(required=False, help_text="Present once a runner started it.")
    finished_at = TimeField(required=False, help_text="Present once it ended.")
    error = serializers.CharField(required=False, help_text="Present only when the job failed.")
    stall_seconds = serializers.IntegerField(
        source="ttl_seconds",
        required=False,
        help_text=(
            "Model downloads only: they expire after this long without progress "
            "(expires_at moves with each progress), never past deadline_at."
        ),
    )
    progress_at = TimeField(
        required=False, allow_null=True, help_text="Model downloads only: the last progress."
    )
    deadline_at = TimeField(
        required=False, help_text="Model downloads only: the hard cap on the job's life."
    )
    attempts = serializers.IntegerField(
        required=False,
        help_text="Present from a second run: a resumable job whose runner died runs again.",
    )

    omit_unless: ClassVar[dict[str, Callable[[Any], object]]] = {
        "started_at": lambda job: job.started_at,
        "finished_at": lambda job: job.finished_at,
        "error": lambda job: job.error,
        # timed by progress (model downloads): both clocks
        "stall_seconds": lambda job: job.deadline_at is not None,
        "progress_at": lambda job: job.deadline_at is not None,
        "deadline_at": lambda job: job.deadline_at is not None,
        "attempts": lambda job: job.attempts > 1,
    }

    @extend_schema_field(OpenApiTypes.STR)
    def get_events_url(self, job: Any) -> str:
        return job_events_url(job)


class JobListSerializer(serializers.Serializer):
    """A page of jobs, newest first, and the cursor of the next page (null at the end)."""

    jobs = JobSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class CancelResultSerializer(serializers.Serializer):
    """Answer to cancelling a job or a sandbox: the status it ended in."""

    ok = serializers.BooleanField()
    status = serializers.CharField(help_text="The terminal status, normally cancelled.")


class EventSerializer(serializers.Serializer):
    """One job event, sent as a data line on the SSE stream."""

    step = serializers.CharField()
    status = serializers.ChoiceField(choices=EVENT_STATUSES)
    message = serializers.CharField(required=False)
    data = serializers.DictField(required=False)  # type: ignore[assignment]


EVENT_STREAM_RESPONSE = OpenApiResponse(
    EventSerializer,
    description=(
        "text/event-stream of Event objects: one `data: <json>` block per event, the "
        "history first, closed after the terminal event."
    ),
)
