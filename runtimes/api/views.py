"""Views of remote runtimes: register, heartbeat, list, and the join tokens that admit them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from matrixcloud.api.schema import PublicSchema, error_responses
from matrixcloud.api.stubs import PendingView
from runtimes.api.serializers import (
    JoinTokenCreateSerializer,
    JoinTokenListSerializer,
    JoinTokenMintedSerializer,
    RegisteredRuntimeListSerializer,
    RuntimeHeartbeatResultSerializer,
    RuntimeHeartbeatSerializer,
    RuntimeRegisteredSerializer,
    RuntimeRegisterSerializer,
)


class RegisteredRuntimeListView(PendingView):
    """The remote runtimes registered to the caller's workspace."""

    capability = "remote runtimes"

    @extend_schema(
        operation_id="cloud_runtimes_list",
        summary="List the workspace's registered runtimes",
        responses={200: RegisteredRuntimeListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)


class RuntimeRegisterView(PendingView):
    """A runtime joins a workspace with a join token (the token is its credential)."""

    capability = "remote runtimes"
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
        self.pending(request, RuntimeRegisterSerializer)


class RuntimeHeartbeatView(PendingView):
    """A registered runtime says it is alive (its runtime token as bearer)."""

    capability = "remote runtimes"
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
        self.pending(request, RuntimeHeartbeatSerializer)


class JoinTokenCollectionView(PendingView):
    """The workspace's join tokens: list them, mint one."""

    capability = "join tokens"

    @extend_schema(
        operation_id="cloud_join_tokens_list",
        summary="List active join tokens",
        responses={200: JoinTokenListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)

    @extend_schema(
        operation_id="cloud_join_tokens_create",
        summary="Mint a single/limited-use join token",
        request=JoinTokenCreateSerializer,
        responses={201: JoinTokenMintedSerializer, **error_responses(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        self.pending(request, JoinTokenCreateSerializer)
