"""Views of model sources (Hugging Face search, resolve), model profiles and installations."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from matrixcloud.api.schema import PublicSchema, error_responses
from matrixcloud.api.stubs import PendingView
from models_registry.api.serializers import (
    HuggingFaceSearchQuerySerializer,
    HuggingFaceSearchSerializer,
    ModelAttachAcceptedSerializer,
    ModelAttachSerializer,
    ModelInstallationListSerializer,
    ModelProfileImportSerializer,
    ModelProfileListSerializer,
    ModelProfileResultSerializer,
    ProfilePreviewSerializer,
    ResolveSourceSerializer,
)

PROFILE_ID = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A model profile id (mp_…)."
)


class HuggingFaceSearchView(PendingView):
    """Search Hugging Face models through this server; open, like the contract says."""

    capability = "Hugging Face search"
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    schema = PublicSchema()

    @extend_schema(
        operation_id="model_sources_huggingface_search",
        summary="Search Hugging Face models (server-side proxy, sorted by downloads)",
        parameters=[HuggingFaceSearchQuerySerializer],
        responses={200: HuggingFaceSearchSerializer},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)


class ResolveSourceView(PendingView):
    """Turn a model source into a profile preview (Hugging Face resolved live)."""

    capability = "model sources"

    @extend_schema(
        operation_id="model_sources_resolve",
        summary="Resolve a source into a model-profile preview (HF resolved live)",
        request=ResolveSourceSerializer,
        responses={200: ProfilePreviewSerializer, **error_responses(400, 401, 502)},
    )
    def post(self, request: Request) -> Response:
        self.pending(request, ResolveSourceSerializer)


class ModelProfileCollectionView(PendingView):
    """The workspace's model profiles: list them, import one."""

    capability = "model profiles"

    @extend_schema(
        operation_id="model_profiles_list",
        summary="List model profiles for the workspace",
        responses={200: ModelProfileListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)

    @extend_schema(
        operation_id="model_profiles_import",
        summary="Import (create) a model profile",
        request=ModelProfileImportSerializer,
        responses={201: ModelProfileResultSerializer, **error_responses(400, 401)},
    )
    def post(self, request: Request) -> Response:
        self.pending(request, ModelProfileImportSerializer)


class ModelProfileAttachView(PendingView):
    """Install a profile onto a runtime: an installation row and a model.attach job."""

    capability = "model installation"

    @extend_schema(
        operation_id="model_profiles_attach",
        summary="Attach/install a profile onto a runtime (creates a model.attach job)",
        parameters=[PROFILE_ID],
        request=ModelAttachSerializer,
        responses={202: ModelAttachAcceptedSerializer, **error_responses(400, 401, 404, 422)},
    )
    def post(self, request: Request, id: str) -> Response:
        self.pending(request, ModelAttachSerializer)


class ModelInstallationListView(PendingView):
    """The workspace's installations with their progress."""

    capability = "model installation"

    @extend_schema(
        operation_id="model_installations_list",
        summary="List runtime-cache installations for the workspace (with progress)",
        responses={200: ModelInstallationListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)
