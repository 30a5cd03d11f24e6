"""Views of model sources (Hugging Face search, resolve), model profiles and installations."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.base import ActorAPIView
from matrixcloud.api.schema import PublicSchema, error_responses
from matrixcloud.api.serializers import validated
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
from models_registry.selectors import (
    installation_json,
    installation_list,
    profile_get,
    profile_json,
    profile_list,
)
from models_registry.services import (
    hf_search,
    profile_attach,
    profile_import,
    source_resolve,
)

PROFILE_ID = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A model profile id (mp_…)."
)


class HuggingFaceSearchView(APIView):
    """Search Hugging Face models through this server; open, like the contract says."""

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
        raw_limit = request.query_params.get("limit", "")
        try:
            limit: int | None = int(raw_limit) if raw_limit else None
        except ValueError:
            limit = None  # unparsable: ignored (docs/COMPATIBILITY.md#c-12)
        answer = hf_search(
            query=request.query_params.get("q", ""),
            task=request.query_params.get("task", ""),
            limit=limit,
        )
        return Response(answer)


class ResolveSourceView(ActorAPIView):
    """Turn a model source into a profile preview (Hugging Face resolved live)."""

    @extend_schema(
        operation_id="model_sources_resolve",
        summary="Resolve a source into a model-profile preview (HF resolved live)",
        request=ResolveSourceSerializer,
        responses={200: ProfilePreviewSerializer, **error_responses(400, 401, 502)},
    )
    def post(self, request: Request) -> Response:
        data = validated(ResolveSourceSerializer, request.data)
        actor = self.actor
        return Response(source_resolve(workspace=actor.workspace, data=data))


class ModelProfileCollectionView(ActorAPIView):
    """The workspace's model profiles: list them, import one."""

    @extend_schema(
        operation_id="model_profiles_list",
        summary="List model profiles for the workspace",
        responses={200: ModelProfileListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        profiles = [profile_json(p) for p in profile_list(workspace=actor.workspace)]
        return Response(ModelProfileListSerializer({"profiles": profiles}).data)

    @extend_schema(
        operation_id="model_profiles_import",
        summary="Import (create) a model profile",
        request=ModelProfileImportSerializer,
        responses={201: ModelProfileResultSerializer, **error_responses(400, 401)},
    )
    def post(self, request: Request) -> Response:
        data = validated(ModelProfileImportSerializer, request.data)
        actor = self.actor
        profile = profile_import(actor=actor, data=data)
        body = ModelProfileResultSerializer({"profile": profile_json(profile)}).data
        return Response(body, status=201)


class ModelProfileAttachView(ActorAPIView):
    """Install a profile onto a runtime: an installation row and a model.attach job."""

    @extend_schema(
        operation_id="model_profiles_attach",
        summary="Attach/install a profile onto a runtime (creates a model.attach job)",
        parameters=[PROFILE_ID],
        request=ModelAttachSerializer,
        responses={202: ModelAttachAcceptedSerializer, **error_responses(400, 401, 404, 422)},
    )
    def post(self, request: Request, id: str) -> Response:
        data = validated(ModelAttachSerializer, request.data)
        actor = self.actor
        profile = profile_get(workspace=actor.workspace, profile_id=id)
        installation, job = profile_attach(
            actor=actor,
            profile=profile,
            runtime_id=data["runtimeId"],
            install_mode=data.get("installMode") or "",
            serving_engine=data.get("servingEngine") or "",
            source_path=data.get("path") or "",
            endpoint_url=data.get("endpointUrl") or "",
        )
        body = {
            "installation_id": installation.id,
            "profile_id": profile.id,
            "job_id": job.pk,
            "events_url": f"/v1/jobs/{job.pk}/events",
        }
        return Response(ModelAttachAcceptedSerializer(body).data, status=202)


class ModelInstallationListView(ActorAPIView):
    """The workspace's installations with their progress."""

    @extend_schema(
        operation_id="model_installations_list",
        summary="List runtime-cache installations for the workspace (with progress)",
        responses={200: ModelInstallationListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        rows = [installation_json(i) for i in installation_list(workspace=actor.workspace)]
        return Response(ModelInstallationListSerializer({"installations": rows}).data)
