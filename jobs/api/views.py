"""Views of ``/v1/jobs``: create, list, read, cancel, and the SSE event stream."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.serializers import (
    EVENT_STREAM_RESPONSE,
    CancelResultSerializer,
    CreateJobResponseSerializer,
    CreateJobSerializer,
    JobListSerializer,
    JobSerializer,
)
from matrixcloud.api.negotiation import EventStreamNegotiation
from matrixcloud.api.schema import error_responses
from matrixcloud.api.stubs import PendingView

JOB_ID = OpenApiParameter(
    "job_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A job id (job_…)."
)


class JobCollectionView(PendingView):
    """The job collection: list jobs, create a job."""

    capability = "the job engine"

    @extend_schema(
        operation_id="jobs_list",
        summary="List jobs (newest first)",
        responses={200: JobListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)

    @extend_schema(
        operation_id="jobs_create",
        summary="Create a job",
        request=CreateJobSerializer,
        responses={202: CreateJobResponseSerializer, **error_responses(400, 401, 422)},
    )
    def post(self, request: Request) -> Response:
        self.pending(request, CreateJobSerializer)


class JobDetailView(PendingView):
    """One job: read it, cancel it."""

    capability = "the job engine"

    @extend_schema(
        operation_id="jobs_retrieve",
        summary="Read a job",
        parameters=[JOB_ID],
        responses={200: JobSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        self.pending(request)

    @extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel/delete a job",
        parameters=[JOB_ID],
        responses={200: CancelResultSerializer, **error_responses(401, 404)},
    )
    def delete(self, request: Request, job_id: str) -> Response:
        self.pending(request)


class JobEventsView(PendingView):
    """A job's events as server-sent events: the history, then live, until the end."""

    capability = "job event streaming"
    content_negotiation_class = EventStreamNegotiation

    @extend_schema(
        operation_id="jobs_events",
        summary="Stream job events (SSE)",
        parameters=[JOB_ID],
        responses={(200, "text/event-stream"): EVENT_STREAM_RESPONSE, **error_responses(401, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        self.pending(request)
