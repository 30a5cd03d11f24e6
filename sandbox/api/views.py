"""Views of ``/v1/sandbox/sessions`` (an alias over mcp.test jobs) and ``/v1/matrixshell``."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.serializers import EVENT_STREAM_RESPONSE, CancelResultSerializer
from matrixcloud.api.negotiation import EventStreamNegotiation
from matrixcloud.api.schema import error_responses
from matrixcloud.api.stubs import PendingView
from sandbox.api.serializers import (
    MatrixShellExecResultSerializer,
    MatrixShellExecSerializer,
    MatrixShellInstallSerializer,
    MatrixShellStatusSerializer,
    SandboxCreateSerializer,
    SandboxResponseSerializer,
    SandboxSessionSerializer,
    ToolCallResultSerializer,
    ToolCallSerializer,
    ToolListSerializer,
)

SESSION_ID = OpenApiParameter(
    "session_id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="A sandbox session id (sbx_…).",
)
NOT_READY = (409, "The sandbox is not ready yet, or has already ended")
SHELL_DISABLED = (403, "MatrixShell disabled")


class SandboxCollectionView(PendingView):
    """Start a sandbox: an MCP server in isolation, as an mcp.test job."""

    capability = "sandboxes"

    @extend_schema(
        operation_id="sandbox_sessions_create",
        summary="Create a sandbox session (alias over mcp.test)",
        request=SandboxCreateSerializer,
        responses={202: SandboxResponseSerializer, **error_responses(400, 401, 422)},
    )
    def post(self, request: Request) -> Response:
        self.pending(request, SandboxCreateSerializer)


class SandboxDetailView(PendingView):
    """One sandbox session: read it, stop it."""

    capability = "sandboxes"

    @extend_schema(
        operation_id="sandbox_sessions_retrieve",
        summary="Read a sandbox session",
        parameters=[SESSION_ID],
        responses={200: SandboxSessionSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        self.pending(request)

    @extend_schema(
        operation_id="sandbox_sessions_destroy",
        summary="Delete a sandbox session",
        parameters=[SESSION_ID],
        responses={200: CancelResultSerializer, **error_responses(401, 404)},
    )
    def delete(self, request: Request, session_id: str) -> Response:
        self.pending(request)


class SandboxEventsView(PendingView):
    """A sandbox's events as server-sent events (those of its backing job)."""

    capability = "job event streaming"
    content_negotiation_class = EventStreamNegotiation

    @extend_schema(
        operation_id="sandbox_sessions_events",
        summary="Stream sandbox events (SSE)",
        parameters=[SESSION_ID],
        responses={(200, "text/event-stream"): EVENT_STREAM_RESPONSE, **error_responses(401, 404)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        self.pending(request)


class SandboxToolsView(PendingView):
    """The tools the sandbox's MCP server advertised."""

    capability = "sandboxes"

    @extend_schema(
        operation_id="sandbox_tools_list",
        summary="List tools advertised by the sandbox's MCP server",
        parameters=[SESSION_ID],
        responses={200: ToolListSerializer, **error_responses(401, 404, NOT_READY)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        self.pending(request)


class SandboxToolCallView(PendingView):
    """Call one tool of the sandbox's MCP server."""

    capability = "sandboxes"

    @extend_schema(
        operation_id="sandbox_tools_call",
        summary="Call a tool in the sandbox",
        parameters=[SESSION_ID],
        request=ToolCallSerializer,
        responses={
            200: ToolCallResultSerializer,
            **error_responses(400, 401, 404, (409, "Not ready, ended, or the MCP call failed")),
        },
    )
    def post(self, request: Request, session_id: str) -> Response:
        self.pending(request, ToolCallSerializer)


class MatrixShellStatusView(PendingView):
    """Whether MatrixShell is installed in its sandbox, and which version."""

    capability = "MatrixShell"

    @extend_schema(
        operation_id="matrixshell_status",
        summary="MatrixShell install status (403 when disabled)",
        responses={200: MatrixShellStatusSerializer, **error_responses(401, SHELL_DISABLED)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)


class MatrixShellInstallView(PendingView):
    """Install MatrixShell into its sandbox as a matrixshell.install job."""

    capability = "MatrixShell"

    @extend_schema(
        operation_id="matrixshell_install",
        summary="Install MatrixShell into the local sandbox (job)",
        request=None,
        responses={
            202: MatrixShellInstallSerializer,
            **error_responses(401, SHELL_DISABLED, 422),
        },
    )
    def post(self, request: Request) -> Response:
        self.pending(request)


class MatrixShellExecView(PendingView):
    """Run one command in the MatrixShell sandbox (denylisted commands are refused)."""

    capability = "MatrixShell"

    @extend_schema(
        operation_id="matrixshell_exec",
        summary="Run a command in the MatrixShell sandbox (denylisted)",
        request=MatrixShellExecSerializer,
        responses={
            200: MatrixShellExecResultSerializer,
            **error_responses(400, 401, (403, "Disabled or blocked by denylist"), 422),
        },
    )
    def post(self, request: Request) -> Response:
        self.pending(request, MatrixShellExecSerializer)
