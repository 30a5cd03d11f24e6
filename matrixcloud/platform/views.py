"""Platform endpoints: health, version, readiness, capabilities, runtimes, catalog,
policies and storage.

Health, version, readiness and capabilities are open (load balancers and clients probe
them before they hold a token); the rest pass the API gate. Each view calls one lib or
selector function and renders it with its serializer.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from matrixcloud.api.schema import PublicSchema, error_responses
from matrixcloud.platform import serializers as out
from matrixcloud.platform.readiness import readiness_report, version_info
from matrixcloud.platform.storage import storage_report
from models_registry.catalog import catalog_items
from runtimes.selectors import capabilities_describe, local_runtime_describe
from sandbox.policy import policies_describe


def caller_is_operator(request: Request) -> bool:
    """Filesystem paths are shown to the installation's operator only."""
    return getattr(request.user, "is_operator", False) is True


class OpenView(APIView):
    """Base of the endpoints anyone may call, with or without credentials."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]


class HealthView(OpenView):
    """Liveness and identity; always open."""

    schema = PublicSchema()

    @extend_schema(summary="Liveness and identity", responses=out.HealthSerializer)
    def get(self, request: Request) -> Response:
        body = {
            "status": "ok",
            "runtime_id": settings.MATRIX_RUNTIME_ID,
            "mode": settings.MATRIX_MODE,
            "version": settings.VERSION,
        }
        return Response(out.HealthSerializer(body).data)


class VersionView(OpenView):
    """Build and version metadata."""

    schema = PublicSchema()

    @extend_schema(summary="Build and version metadata", responses=out.VersionSerializer)
    def get(self, request: Request) -> Response:
        return Response(out.VersionSerializer(version_info()).data)


class ReadyView(OpenView):
    """Readiness probe: 200 when every check passes, else 503 naming the failures."""

    schema = PublicSchema()

    @extend_schema(
        summary="Readiness probe (checks + warnings)",
        responses={
            200: OpenApiResponse(out.ReadinessSerializer, description="Ready"),
            503: OpenApiResponse(out.ReadinessSerializer, description="Not ready"),
        },
    )
    def get(self, request: Request) -> Response:
        report = readiness_report()
        return Response(
            out.ReadinessSerializer(report).data, status=200 if report["ready"] else 503
        )


class CapabilitiesView(OpenView):
    """Job types accepted, runtimes detected and limits; open, as the original left it.

    The contract documents it with the default security (bearer or anonymous), so its
    schema keeps that.
    """

    @extend_schema(
        summary="Runtime capabilities and limits",
        responses=out.CapabilitiesSerializer,
        # Bearer or anonymous, as the contract says; spectacular passes these requirement
        # objects through (its annotation only mentions names) and would otherwise list
        # the anonymous requirement twice.
        auth=[{"bearerAuth": []}, {}],  # type: ignore[list-item]
    )
    def get(self, request: Request) -> Response:
        return Response(out.CapabilitiesSerializer(capabilities_describe()).data)


class RuntimesView(APIView):
    """This installation, with its live worker and sandbox-host processes."""

    @extend_schema(
        summary="Runtimes connected to this control surface",
        responses={200: out.LocalRuntimeListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        body = {"runtimes": [local_runtime_describe()]}
        return Response(out.LocalRuntimeListSerializer(body).data)


class CatalogView(APIView):
    """The curated catalog of MCP servers and models."""

    @extend_schema(
        summary="Curated catalog of MCP servers and models",
        responses={
            200: out.CatalogSerializer,
            **error_responses(401, (500, "The catalog file is broken")),
        },
    )
    def get(self, request: Request) -> Response:
        return Response(out.CatalogSerializer({"items": catalog_items()}).data)


class PoliciesView(APIView):
    """The enforced guardrails: sandbox limits, command rules, runtime settings."""

    @extend_schema(
        summary="Enforced guardrails (limits + command allow/deny lists)",
        responses={200: out.PoliciesSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        policies = policies_describe(include_paths=caller_is_operator(request))
        return Response(out.PoliciesSerializer({"policies": policies}).data)


class StorageView(APIView):
    """Data-directory usage by area, free disk and the job count."""

    @extend_schema(
        summary="Data-directory storage usage and free disk",
        responses={200: out.StorageSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        report = storage_report(include_paths=caller_is_operator(request))
        return Response(out.StorageSerializer(report).data)
