"""Views of remote runtimes: register, heartbeat, list, and the join tokens that admit them.

Register and heartbeat are outside the gate (the join token in the body, the runtime
token as bearer are their credentials); everything else acts for the caller's workspace
(``actor_for``), and minting, revoking, rotating and removing need an Owner or Admin.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.base import ActorAPIView
from matrixcloud.api.authentication import bearer_token
from matrixcloud.api.schema import PublicSchema, error_responses
from matrixcloud.api.serializers import validated
from matrixcloud.lib.addresses import client_ip
from matrixcloud.lib.ratelimit import credential_proven
from runtimes.api.serializers import (
    JoinTokenCreateSerializer,
    JoinTokenListSerializer,
    JoinTokenMintedSerializer,
    JoinTokenResultSerializer,
    JoinTokenSerializer,
    RegisteredRuntimeListSerializer,
    RegisteredRuntimeResultSerializer,
    RegisteredRuntimeSerializer,
    RuntimeHeartbeatResultSerializer,
    RuntimeHeartbeatSerializer,
    RuntimeRegisteredSerializer,
    RuntimeRegisterSerializer,
)
from runtimes.selectors import join_token_get, join_tokens_list, runtime_get, runtimes_list
from runtimes.services import (
    join_token_issue,
    join_token_revoke,
    runtime_authenticate,
    runtime_heartbeat,
    runtime_register,
    runtime_remove,
    runtime_token_revoke,
    runtime_token_rotate,
)

RUNTIME_ID = OpenApiParameter(
    "runtime_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A runtime id (rt_…)."
)
TOKEN_ID = OpenApiParameter(
    "token_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A join token id (jt_…)."
)
ALL_PARAM = OpenApiParameter(
    "all",
    OpenApiTypes.BOOL,
    description="true: every token, also revoked, expired and used-up ones.",
)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class RegisteredRuntimeListView(ActorAPIView):
    """The remote runtimes registered to the caller's workspace."""

    @extend_schema(
        operation_id="cloud_runtimes_list",
        summary="List the workspace's registered runtimes",
        responses={200: RegisteredRuntimeListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        runtimes = runtimes_list(workspace=actor.visible_workspace)
        return Response({"runtimes": RegisteredRuntimeSerializer(runtimes, many=True).data})


class RegisteredRuntimeDetailView(ActorAPIView):
    """One registered runtime: read it, or remove it (its token dies with it)."""

    @extend_schema(
        operation_id="cloud_runtimes_retrieve",
        summary="Read one registered runtime",
        parameters=[RUNTIME_ID],
        responses={200: RegisteredRuntimeResultSerializer, **error_responses(401, 404)},
    )
    def get(self, request: Request, runtime_id: str) -> Response:
        actor = self.actor
        runtime = runtime_get(workspace=actor.visible_workspace, runtime_id=runtime_id)
        return Response({"runtime": RegisteredRuntimeSerializer(runtime).data})

    @extend_schema(
        operation_id="cloud_runtimes_destroy",
        summary="Remove a registered runtime",
        parameters=[RUNTIME_ID],
        responses={200: RegisteredRuntimeResultSerializer, **error_responses(401, 403, 404)},
    )
    def delete(self, request: Request, runtime_id: str) -> Response:
        actor = self.actor
        runtime = runtime_get(workspace=actor.visible_workspace, runtime_id=runtime_id)
        actor.require_manager("remove runtimes")
        body = RegisteredRuntimeSerializer(runtime).data
        runtime_remove(runtime=runtime, actor=actor)
        return Response({"runtime": body})


class RuntimeTokenRotateView(ActorAPIView):
    """A new runtime token for a registered runtime (shown once; lifts a revocation)."""

    @extend_schema(
        operation_id="cloud_runtimes_token_rotate",
        summary="Rotate a runtime's token",
        parameters=[RUNTIME_ID],
        request=None,
        responses={200: RuntimeRegisteredSerializer, **error_responses(401, 403, 404)},
    )
    def post(self, request: Request, runtime_id: str) -> Response:
        actor = self.actor
        runtime = runtime_get(workspace=actor.visible_workspace, runtime_id=runtime_id)
        actor.require_manager("rotate runtime tokens")
        issued = runtime_token_rotate(runtime=runtime, actor=actor)
        return Response(
            {
                "runtime": RegisteredRuntimeSerializer(issued.runtime).data,
                "runtime_token": issued.token,
            }
        )


class RuntimeTokenRevokeView(ActorAPIView):
    """Revoke a runtime's token: its heartbeats are refused until a rotation."""

    @extend_schema(
        operation_id="cloud_runtimes_token_revoke",
        summary="Revoke a runtime's token",
        parameters=[RUNTIME_ID],
        request=None,
        responses={200: RegisteredRuntimeResultSerializer, **error_responses(401, 403, 404)},
    )
    def post(self, request: Request, runtime_id: str) -> Response:
        actor = self.actor
        runtime = runtime_get(workspace=actor.visible_workspace, runtime_id=runtime_id)
        actor.require_manager("revoke runtime tokens")
        runtime = runtime_token_revoke(runtime=runtime, actor=actor)
        return Response({"runtime": RegisteredRuntimeSerializer(runtime).data})


class RuntimeRegisterView(APIView):
    """A runtime joins a workspace with a join token (the token is its credential)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    schema = PublicSchema()

    @extend_schema(
        operation_id="cloud_runtimes_register",
        summary="Register a runtime using a workspace join token",
        request=RuntimeRegisterSerializer,
        responses={
            201: RuntimeRegisteredSerializer,
            **error_responses(400, (401, "Invalid join token")),
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(RuntimeRegisterSerializer, request.data)
        issued = runtime_register(**data, ip=client_ip(request._request))
        return Response(
            {
                "runtime": RegisteredRuntimeSerializer(issued.runtime).data,
                "runtime_token": issued.token,
            },
            status=201,
        )


class RuntimeHeartbeatView(APIView):
    """A registered runtime says it is alive (its runtime token as bearer)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    schema = PublicSchema()

    @extend_schema(
        operation_id="cloud_runtimes_heartbeat",
        summary="Runtime liveness heartbeat (runtime-token auth)",
        request=RuntimeHeartbeatSerializer,
        responses={
            200: RuntimeHeartbeatResultSerializer,
            **error_responses(400, (401, "Invalid runtime token")),
        },
    )
    def post(self, request: Request) -> Response:
        # Malformed JSON is a 400 like everywhere; then the token, before the fields, so
        # an unauthenticated caller learns nothing about what a body should hold.
        data = request.data
        runtime = runtime_authenticate(bearer_token(request._request))
        credential_proven(request._request)  # its next heartbeats are not rate limited
        fields = validated(RuntimeHeartbeatSerializer, data)
        runtime = runtime_heartbeat(runtime=runtime, **fields, ip=client_ip(request._request))
        return Response({"runtime": RegisteredRuntimeSerializer(runtime).data})


class JoinTokenCollectionView(ActorAPIView):
    """The workspace's join tokens: list them, mint one."""

    @extend_schema(
        operation_id="cloud_join_tokens_list",
        summary="List active join tokens",
        parameters=[ALL_PARAM],
        responses={200: JoinTokenListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        everything = _truthy(request.query_params.get("all", ""))
        tokens = join_tokens_list(workspace=actor.visible_workspace, include_inactive=everything)
        return Response({"join_tokens": JoinTokenSerializer(tokens, many=True).data})

    @extend_schema(
        operation_id="cloud_join_tokens_create",
        summary="Mint a single/limited-use join token",
        request=JoinTokenCreateSerializer,
        responses={201: JoinTokenMintedSerializer, **error_responses(400, 401, 403, 422)},
    )
    def post(self, request: Request) -> Response:
        actor = self.actor
        actor.require_manager("mint join tokens")
        minted = join_token_issue(actor=actor, **validated(JoinTokenCreateSerializer, request.data))
        return Response(
            {"join_token": JoinTokenSerializer(minted.token).data, "secret": minted.secret},
            status=201,
        )


class JoinTokenRevokeView(ActorAPIView):
    """Revoke a join token: later registrations with it are refused (idempotent)."""

    @extend_schema(
        operation_id="cloud_join_tokens_revoke",
        summary="Revoke a join token",
        parameters=[TOKEN_ID],
        request=None,
        responses={200: JoinTokenResultSerializer, **error_responses(401, 403, 404)},
    )
    def post(self, request: Request, token_id: str) -> Response:
        actor = self.actor
        token = join_token_get(workspace=actor.visible_workspace, token_id=token_id)
        actor.require_manager("revoke join tokens")
        token = join_token_revoke(token=token, actor=actor)
        return Response({"join_token": JoinTokenSerializer(token).data})
