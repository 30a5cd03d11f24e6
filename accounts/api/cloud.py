"""Views of the workspace's provider credentials, usage and audit log (``/v1/cloud``).

Thin: the request's actor and input, one service or selector, the wire shape. Join
tokens and runtimes live in ``runtimes.api``.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.base import ActorAPIView
from accounts.api.serializers import (
    AuditEventSerializer,
    AuditLogSerializer,
    ProviderCredentialCreateSerializer,
    ProviderCredentialListSerializer,
    ProviderCredentialResultSerializer,
    ProviderCredentialSerializer,
    ProviderCredentialUpdateSerializer,
    UsageSerializer,
)
from accounts.selectors import AUDIT_PAGE, audit_page, providers_of
from accounts.services.providers import provider_delete, provider_update, provider_upsert
from accounts.services.usage import DEFAULT_DAYS, MAX_DAYS, usage_since, usage_sums
from matrixcloud.api.schema import error_responses
from matrixcloud.api.serializers import validated
from matrixcloud.errors import BadRequest

DAYS_MESSAGE = f"days must be an integer between 1 and {MAX_DAYS}"


def _int_query(request: Request, name: str, default: int, message: str) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise BadRequest(message)
    return int(raw)


class ProviderCredentialCollectionView(ActorAPIView):
    """The workspace's provider credentials: list them (hints only), store one."""

    @extend_schema(
        operation_id="cloud_providers_list",
        summary="List BYO provider credentials (hints only)",
        responses={200: ProviderCredentialListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        credentials = providers_of(workspace=actor.workspace)
        return Response({"providers": ProviderCredentialSerializer(credentials, many=True).data})

    @extend_schema(
        operation_id="cloud_providers_create",
        summary="Store a BYO provider token (encrypted at rest; same provider+label replaces)",
        request=ProviderCredentialCreateSerializer,
        responses={
            201: ProviderCredentialResultSerializer,
            **error_responses(400, 401, 403),
        },
    )
    def post(self, request: Request) -> Response:
        actor = self.actor
        actor.require_manager("store provider credentials")
        data = validated(ProviderCredentialCreateSerializer, request.data)
        credential = provider_upsert(
            provider=data["provider"],
            label=data.get("label"),
            secret=data["secret"],
            meta=data.get("meta"),
            usable_by_members=data.get("usable_by_members"),
            actor=actor,
        )
        return Response({"provider": ProviderCredentialSerializer(credential).data}, status=201)


class ProviderCredentialDetailView(ActorAPIView):
    """One provider credential: change who may use it, or remove it (additive endpoint)."""

    @extend_schema(
        operation_id="cloud_providers_update",
        summary="Mark a provider credential usable by members or not (Owner or Admin)",
        request=ProviderCredentialUpdateSerializer,
        responses={
            200: ProviderCredentialResultSerializer,
            **error_responses(400, 401, 403, 404),
        },
    )
    def patch(self, request: Request, credential_id: str) -> Response:
        actor = self.actor
        actor.require_manager("change provider credentials")
        data = validated(ProviderCredentialUpdateSerializer, request.data)
        credential = provider_update(
            credential_id=credential_id,
            usable_by_members=data["usable_by_members"],
            actor=actor,
        )
        return Response({"provider": ProviderCredentialSerializer(credential).data})

    @extend_schema(
        operation_id="cloud_providers_delete",
        summary="Delete a provider credential (Owner or Admin)",
        request=None,
        responses={204: None, **error_responses(401, 403, 404)},
    )
    def delete(self, request: Request, credential_id: str) -> Response:
        actor = self.actor
        actor.require_manager("delete provider credentials")
        provider_delete(credential_id=credential_id, actor=actor)
        return Response(status=204)


class UsageView(ActorAPIView):
    """The workspace's metered usage, summed per kind over the last 30 days."""

    @extend_schema(
        operation_id="cloud_usage",
        summary="30-day usage metering by kind",
        parameters=[
            OpenApiParameter(
                "days",
                OpenApiTypes.INT,
                description=f"Window in days, 1 to {MAX_DAYS} (default {DEFAULT_DAYS}).",
            )
        ],
        responses={200: UsageSerializer, **error_responses(400, 401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        days = _int_query(request, "days", DEFAULT_DAYS, DAYS_MESSAGE)
        if not 1 <= days <= MAX_DAYS:
            raise BadRequest(DAYS_MESSAGE)
        since = usage_since(days).replace(microsecond=0)
        usage = usage_sums(workspace=actor.workspace, since=since)
        return Response(UsageSerializer({"since": since, "usage": usage}).data)


class AuditLogView(ActorAPIView):
    """The workspace's audit events, newest first, a page at a time."""

    @extend_schema(
        operation_id="cloud_audit",
        summary="Recent audit events for the workspace (Owner or Admin)",
        parameters=[
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description=f"Page size, 1 to {AUDIT_PAGE} (default {AUDIT_PAGE}).",
            ),
            OpenApiParameter(
                "cursor", OpenApiTypes.STR, description="next_cursor of the previous page."
            ),
        ],
        responses={200: AuditLogSerializer, **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        # Other members' addresses and failed sign-ins are for those who run the workspace.
        actor.require_manager("read the audit log")
        limit = _int_query(
            request, "limit", AUDIT_PAGE, f"limit must be between 1 and {AUDIT_PAGE}"
        )
        page = audit_page(
            workspace=actor.workspace, limit=limit, cursor=request.query_params.get("cursor", "")
        )
        events = AuditEventSerializer(page.events, many=True).data
        return Response({"events": events, "next_cursor": page.next_cursor})
