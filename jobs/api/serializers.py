"""Wire shapes of ``/v1/jobs``: the create request, job snapshots and events."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers

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


class CreateJobResponseSerializer(serializers.Serializer):
    """Answer to a job creation (202): where to follow it."""

    job_id = serializers.CharField()
    status = serializers.CharField()
    events_url = serializers.CharField(help_text="/v1/jobs/<job_id>/events")


class JobSerializer(serializers.Serializer):
    """A job snapshot: type, status, lifetime, result or error."""

    job_id = serializers.CharField()
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=JOB_STATUSES)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    result = serializers.JSONField(allow_null=True, help_text="The type's result; null until done.")
    error = serializers.CharField(required=False, help_text="Present only when the job failed.")
    stall_seconds = serializers.IntegerField(
        required=False,
        help_text=(
            "Model downloads only: they expire after this long without progress "
            "(expires_at moves with each progress), never past deadline_at."
        ),
    )
    progress_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Model downloads only: the last progress."
    )
    deadline_at = serializers.DateTimeField(
        required=False, help_text="Model downloads only: the hard cap on the job's life."
    )
    attempts = serializers.IntegerField(
        required=False,
        help_text="Present from a second run: a resumable job whose runner died runs again.",
    )


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
