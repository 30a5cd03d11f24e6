"""Views of ``/v1/matrixshell``: status, install (a job) and exec, in the caller's workspace.

Each checks the feature gate first (403 when MatrixShell is off), after the normal
authentication gate. Thin: input serializer, the actor, one service. An exec whose client
disconnects before the answer is stopped (``matrixcloud.lib.lanes.client_gone``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from django.http.response import HttpResponseBase
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.base import ActorAPIView
from matrixcloud.api.schema import error_responses
from matrixcloud.api.serializers import validated
from matrixcloud.lib.lanes import DEFERRABLE, DeferredResponse, client_gone, run_in_lane
from sandbox.api.serializers import (
    MatrixShellExecResultSerializer,
    MatrixShellExecSerializer,
    MatrixShellInstallSerializer,
    MatrixShellStatusSerializer,
)
from sandbox.matrixshell.services import (
    PreparedExec,
    matrixshell_exec_prepare,
    matrixshell_exec_record,
    matrixshell_exec_run,
    matrixshell_gate,
    matrixshell_install,
    matrixshell_status,
)

SHELL_DISABLED = (403, "MatrixShell disabled")


class ExecResultSerializer(MatrixShellExecResultSerializer):
    """The contract's exec answer, plus why a command was cut short and how long it ran."""

    timed_out = serializers.BooleanField(help_text="Killed at the exec timeout.")
    truncated = serializers.BooleanField(help_text="Killed when its output passed the cap.")
    disk_full = serializers.BooleanField(help_text="The workspace's disk quota is full.")
    duration_ms = serializers.IntegerField()


class MatrixShellStatusView(ActorAPIView):
    """Whether MatrixShell is installed in the workspace's sandbox, and which version."""

    @extend_schema(
        operation_id="matrixshell_status",
        summary="MatrixShell install status (403 when disabled)",
        responses={
            200: MatrixShellStatusSerializer,
            **error_responses(401, SHELL_DISABLED, (503, "Its disk could not be mounted")),
        },
    )
    def get(self, request: Request) -> Response:
        matrixshell_gate()
        return Response(matrixshell_status(workspace=self.actor.workspace))


class MatrixShellInstallView(ActorAPIView):
    """Install MatrixShell into the workspace's sandbox as a matrixshell.install job."""

    @extend_schema(
        operation_id="matrixshell_install",
        summary="Install MatrixShell into the local sandbox (job)",
        request=None,
        responses={
            202: MatrixShellInstallSerializer,
            **error_responses(401, SHELL_DISABLED, (409, "An install is already running"), 422),
        },
    )
    def post(self, request: Request) -> Response:
        matrixshell_gate()
        actor = self.actor
        job = matrixshell_install(actor=actor)
        return Response({"job_id": job.pk, "events_url": f"/v1/jobs/{job.pk}/events"}, status=202)


class MatrixShellExecView(ActorAPIView):
    """Run one command in the workspace's MatrixShell sandbox (denylisted ones refused)."""

    @extend_schema(
        operation_id="matrixshell_exec",
        summary="Run a command in the MatrixShell sandbox (denylisted)",
        request=MatrixShellExecSerializer,
        responses={
            200: ExecResultSerializer,
            **error_responses(
                400,
                401,
                (403, "Disabled or blocked by denylist"),
                422,
                (503, "Its disk could not be mounted"),
            ),
        },
    )
    def post(self, request: Request) -> HttpResponseBase:
        data = validated(MatrixShellExecSerializer, request.data)  # a bad body: 400 first
        matrixshell_gate()
        prepared = matrixshell_exec_prepare(command=data["command"], actor=self.actor)
        # A client that disconnects mid-command stops it (its whole process tree).
        gone = client_gone(request._request)
        if request._request.META.get(DEFERRABLE):
            # Served by the web lane: the command runs on the event loop, holding no thread.
            return DeferredResponse(partial(_complete_exec, prepared, gone))
        run = asyncio.run(matrixshell_exec_run(prepared, client_gone=gone))
        return Response(matrixshell_exec_record(prepared, run))


async def _complete_exec(
    prepared: PreparedExec, gone: Callable[[], bool], response: DeferredResponse
) -> None:
    """The deferred exec response: run the command, then audit and meter it in a lane."""
    outcome = await matrixshell_exec_run(prepared, client_gone=gone)
    body = await run_in_lane(matrixshell_exec_record, prepared, outcome)
    response.content = JSONRenderer().render(body)
