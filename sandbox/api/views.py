"""Views of ``/v1/sandbox/sessions`` (an alias over mcp.test jobs).

Sandbox views are thin: input serializer, the actor, one selector or service. Another
workspace's session is a 404 (``sandbox session not found``) everywhere. MatrixShell's
views are in sandbox/api/matrixshell.py.
"""

from __future__ import annotations

from functools import partial

from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.base import ActorAPIView
from jobs.api.serializers import EVENT_STREAM_RESPONSE, CancelResultSerializer
from jobs.api.views import CANCEL_WAIT_SECONDS, STREAM_PARAMETERS
from jobs.services import job_await_terminal
from jobs.streams import job_stream_response
from matrixcloud.api.negotiation import EventStreamNegotiation
from matrixcloud.api.schema import error_responses
from matrixcloud.api.serializers import validated
from matrixcloud.errors import BadRequest, error_payload
from matrixcloud.lib import sse
from matrixcloud.lib.lanes import DEFERRABLE, DeferredResponse, run_in_lane
from sandbox.api import fastcall
from sandbox.api.serializers import (
    SandboxCreateSerializer,
    SandboxResponseSerializer,
    SandboxSessionSerializer,
    ToolCallResultSerializer,
    ToolCallSerializer,
    ToolListSerializer,
)
from sandbox.selectors import session_get, session_tools
from sandbox.services import (
    PreparedCall,
    sandbox_create,
    sandbox_stop,
    tool_call_failure,
    tool_call_prepare,
    tool_call_result,
    tool_call_send,
    tool_call_send_async,
)

SESSION_ID = OpenApiParameter(
    "session_id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="A sandbox session id (sbx_…).",
)
NOT_READY = (409, "The sandbox is not ready yet, or has already ended")


class SandboxCollectionView(ActorAPIView):
    """Start a sandbox: an MCP server in isolation, as an mcp.test job."""

    @extend_schema(
        operation_id="sandbox_sessions_create",
        summary="Create a sandbox session (alias over mcp.test)",
        request=SandboxCreateSerializer,
        responses={202: SandboxResponseSerializer, **error_responses(400, 401, 422)},
    )
    def post(self, request: Request) -> Response:
        data = validated(SandboxCreateSerializer, request.data)
        actor = self.actor
        session = sandbox_create(
            start_command=data["start_command"],
            env=data.get("env"),
            ttl_seconds=data.get("ttl_seconds"),
            transport=data.get("transport", ""),
            allow_network=data["allow_network"],
            network_allow=data.get("network_allow") or [],
            actor=actor,
        )
        return Response(SandboxResponseSerializer(session).data, status=202)


class SandboxDetailView(ActorAPIView):
    """One sandbox session: read it, stop it."""

    @extend_schema(
        operation_id="sandbox_sessions_retrieve",
        summary="Read a sandbox session",
        parameters=[SESSION_ID],
        responses={200: SandboxSessionSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        actor = self.actor
        session = session_get(session_id=session_id, workspace=actor.visible_workspace)
        return Response(SandboxSessionSerializer(session).data)

    @extend_schema(
        operation_id="sandbox_sessions_destroy",
        summary="Delete a sandbox session",
        parameters=[SESSION_ID],
        responses={200: CancelResultSerializer, **error_responses(401, 404)},
    )
    def delete(self, request: Request, session_id: str) -> Response:
        actor = self.actor
        session = session_get(session_id=session_id, workspace=actor.visible_workspace)
        status = sandbox_stop(session=session, actor=actor)
        status = job_await_terminal(session.job_id, status, timeout=CANCEL_WAIT_SECONDS)
        return Response({"ok": True, "status": status})


class SandboxEventsView(ActorAPIView):
    """A sandbox's events as server-sent events (those of its backing job).

    A plain view, like the job stream: the web lane runs it in a thread, then sends the
    stream from the event loop (``matrixcloud.lib.sse``).
    """

    content_negotiation_class = EventStreamNegotiation

    @extend_schema(
        operation_id="sandbox_sessions_events",
        summary="Stream sandbox events (SSE)",
        parameters=[SESSION_ID, *STREAM_PARAMETERS],
        responses={
            (200, "text/event-stream"): EVENT_STREAM_RESPONSE,
            204: OpenApiResponse(description="Last-Event-ID is already the terminal event."),
            **error_responses(400, 401, 404),
        },
    )
    def get(self, request: Request, session_id: str) -> HttpResponseBase:
        actor = self.actor
        session = session_get(session_id=session_id, workspace=actor.visible_workspace)
        return job_stream_response(session.job, after=sse.last_event_id(request._request))


class SandboxToolsView(ActorAPIView):
    """The tools the sandbox's MCP server advertised."""

    @extend_schema(
        operation_id="sandbox_tools_list",
        summary="List tools advertised by the sandbox's MCP server",
        parameters=[SESSION_ID],
        responses={200: ToolListSerializer, **error_responses(401, 404, NOT_READY)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        actor = self.actor
        session = session_get(session_id=session_id, workspace=actor.visible_workspace)
        return Response({"tools": session_tools(session)})


class SandboxToolCallView(ActorAPIView):
    """Call one tool of the sandbox's MCP server (through the host that runs it)."""

    @extend_schema(
        operation_id="sandbox_tools_call",
        summary="Call a tool in the sandbox",
        parameters=[SESSION_ID],
        request=ToolCallSerializer,
        responses={
            200: ToolCallResultSerializer,
            **error_responses(
                400, 401, 404, (409, "Not ready, ended, or the MCP call failed"), 503
            ),
        },
    )
    def post(self, request: Request, session_id: str) -> HttpResponseBase:
        data = validated(ToolCallSerializer, request.data)
        name = data["name"].strip()
        if not name:
            raise BadRequest("tool name is required")
        actor = self.actor
        session = session_get(session_id=session_id, workspace=actor.visible_workspace)
        call = tool_call_prepare(
            session=session,
            name=name,
            arguments=data.get("arguments"),
            actor=actor,
        )
        if call.refusal is None:
            fastcall.remember(request._request, actor, session)
        if call.refusal is None and request._request.META.get(DEFERRABLE):
            # Served by the web lane: wait for the host's reply on the event loop.
            return DeferredResponse(partial(_complete_call, call))
        return Response({"ok": True, "result": tool_call_result(call, tool_call_send(call))})


async def _complete_call(call: PreparedCall, response: DeferredResponse) -> None:
    """The deferred tool-call response: the result, or the failure in the error shape."""
    reply = await tool_call_send_async(call)
    if reply.get("ok"):
        response.content = JSONRenderer().render({"ok": True, "result": reply["result"]})
        return
    error = await run_in_lane(tool_call_failure, call, reply)
    response.status_code = error.http_status
    response.content = JSONRenderer().render(error_payload(error.message, error.http_status))
