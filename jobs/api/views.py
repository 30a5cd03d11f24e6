"""Views of ``/v1/jobs``: create, list, read, cancel, and the SSE event stream."""

from __future__ import annotations

from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.base import ActorAPIView
from jobs.api.serializers import (
    EVENT_STREAM_RESPONSE,
    CancelResultSerializer,
    CreateJobResponseSerializer,
    CreateJobSerializer,
    JobListSerializer,
    JobSerializer,
)
from jobs.selectors import job_get, job_list
from jobs.services import job_await_terminal, job_cancel, job_enqueue
from jobs.streams import job_stream_response
from matrixcloud.api.negotiation import EventStreamNegotiation
from matrixcloud.api.schema import error_responses
from matrixcloud.api.serializers import validated
from matrixcloud.errors import BadRequest
from matrixcloud.lib import sse

CANCEL_WAIT_SECONDS = 1.5
JOB_ID = OpenApiParameter(
    "job_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A job id (job_…)."
)


STREAM_PARAMETERS = [
    OpenApiParameter(
        "Last-Event-ID",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        description="Resume after this event id (sequence number); absent: full history.",
    ),
    OpenApiParameter(
        sse.LAST_EVENT_ID_PARAM,
        OpenApiTypes.INT,
        description="Like the Last-Event-ID header, for clients that cannot set headers.",
    ),
]
LIST_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="Page size, 1 to 200 (default 50)."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="next_cursor of the previous page."),
    OpenApiParameter("type", OpenApiTypes.STR, description="Only jobs of this type."),
    OpenApiParameter("status", OpenApiTypes.STR, description="Only jobs in this status."),
]


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


class JobCollectionView(ActorAPIView):
    """The job collection: list the workspace's jobs, create a job."""

    @extend_schema(
        operation_id="jobs_list",
        summary="List jobs (newest first)",
        parameters=LIST_PARAMETERS,
        responses={200: JobListSerializer, **error_responses(400, 401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        page = job_list(
            workspace=actor.visible_workspace,
            limit=_int_param(request, "limit", 50),
            cursor=request.query_params.get("cursor", ""),
            job_type=request.query_params.get("type", ""),
            status=request.query_params.get("status", ""),
        )
        jobs = JobSerializer(page.jobs, many=True).data
        return Response({"jobs": jobs, "next_cursor": page.next_cursor})

    @extend_schema(
        operation_id="jobs_create",
        summary="Create a job",
        request=CreateJobSerializer,
        responses={202: CreateJobResponseSerializer, **error_responses(400, 401, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        data = validated(CreateJobSerializer, request.data)
        actor = self.actor
        job = job_enqueue(
            job_type=data["type"],
            payload=data.get("payload"),
            ttl_seconds=data.get("ttl_seconds"),
            actor=actor,
        )
        return Response(CreateJobResponseSerializer(job).data, status=202)


class JobDetailView(ActorAPIView):
    """One job: read it, cancel it (the record stays)."""

    @extend_schema(
        operation_id="jobs_retrieve",
        summary="Read a job",
        parameters=[JOB_ID],
        responses={200: JobSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        actor = self.actor
        job = job_get(job_id=job_id, workspace=actor.visible_workspace)
        return Response(JobSerializer(job).data)

    @extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel/delete a job",
        parameters=[JOB_ID],
        responses={200: CancelResultSerializer, **error_responses(401, 404)},
    )
    def delete(self, request: Request, job_id: str) -> Response:
        actor = self.actor
        job = job_get(job_id=job_id, workspace=actor.visible_workspace)
        status = job_cancel(job=job, actor=actor)
        status = job_await_terminal(job.pk, status, timeout=CANCEL_WAIT_SECONDS)
        return Response({"ok": True, "status": status})


class JobEventsView(ActorAPIView):
    """A job's events as server-sent events: the history, then live, until the end.

    This view authenticates, finds the job (404 before any streaming) and builds the
    response in a web lane thread; the stream itself runs on the event loop, holding no
    thread or database connection (``matrixcloud.lib.sse``).
    """

    content_negotiation_class = EventStreamNegotiation

    @extend_schema(
        operation_id="jobs_events",
        summary="Stream job events (SSE)",
        parameters=[JOB_ID, *STREAM_PARAMETERS],
        responses={
            (200, "text/event-stream"): EVENT_STREAM_RESPONSE,
            204: OpenApiResponse(description="Last-Event-ID is already the terminal event."),
            **error_responses(400, 401, 404),
        },
    )
    def get(self, request: Request, job_id: str) -> HttpResponseBase:
        actor = self.actor
        job = job_get(job_id=job_id, workspace=actor.visible_workspace)
        return job_stream_response(job, after=sse.last_event_id(request._request))
