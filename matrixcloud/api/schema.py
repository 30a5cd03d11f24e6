"""OpenAPI documentation: ``/openapi.yaml``, ``/docs``, and what views use to describe themselves.

The schema is generated from the code by drf-spectacular;
``tests/matrixcloud/test_contract_schema.py`` checks it against the contract
(``docs/contract/openapi.yaml``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.views.generic import TemplateView
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.utils import OpenApiResponse
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from matrixcloud.api.serializers import ErrorSerializer

ERROR_DESCRIPTIONS = {
    400: "Invalid input (malformed JSON or a field that fails validation)",
    401: "Missing or invalid credentials",
    403: "Not allowed",
    404: "Not found (or another workspace's)",
    409: "Conflict with the object's current state",
    422: "Well-formed input that breaks a rule",
    502: "An upstream service failed",
    503: "A dependency of this installation is unavailable",
}


def error_responses(*codes: int | tuple[int, str]) -> dict[int, OpenApiResponse]:
    """Error-shape responses for ``@extend_schema``: ``400`` or ``(401, "description")``."""
    responses: dict[int, OpenApiResponse] = {}
    for entry in codes:
        code, description = entry if isinstance(entry, tuple) else (entry, "")
        responses[code] = OpenApiResponse(
            ErrorSerializer, description=description or ERROR_DESCRIPTIONS.get(code, "Error")
        )
    return responses


# What the API guard (``matrixcloud/middleware.py``) answers before any view runs, so
# every operation can answer it: a malformed URL or Content-Length for any request; a
# foreign Origin, an oversized or non-JSON body and the per-IP write limit for writes.
GUARD_RESPONSES = {
    "400": "Malformed request (a NUL in the URL, an invalid Content-Length)",
}
GUARD_WRITE_RESPONSES = {
    "403": "Cross-origin request refused",
    "413": "Request body too large",
    "415": "Request body must be application/json",
    "429": "Too many writes from this address (Retry-After says when to retry)",
}
SAFE_METHODS = ("get", "head", "options")


def add_guard_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document the guard's answers everywhere."""
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            extra = dict(GUARD_RESPONSES)
            if method not in SAFE_METHODS:
                extra.update(GUARD_WRITE_RESPONSES)
            for code, description in extra.items():
                error = {"schema": {"$ref": "#/components/schemas/Error"}}
                operation["responses"].setdefault(
                    code, {"description": description, "content": {"application/json": error}}
                )
    return result


class DeclaredSecuritySchema(AutoSchema):
    """An operation's ``security`` as declared here, not as inferred from the view.

    drf-spectacular infers security from the authentication and permission classes;
    views outside the gate (no authentication classes, ``AllowAny``) declare what the
    contract says instead.
    """

    security: ClassVar[list[dict[str, list[str]]]] = []

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is not None:
            operation["security"] = list(self.security)
        return operation


class PublicSchema(DeclaredSecuritySchema):
    """The contract's ``security: []``: no credentials at all."""

    security: ClassVar[list[dict[str, list[str]]]] = []


class SessionSchema(DeclaredSecuritySchema):
    """A user's session token is required; the endpoint checks it itself."""

    security: ClassVar[list[dict[str, list[str]]]] = [{"bearerAuth": []}]


class OptionalSessionSchema(DeclaredSecuritySchema):
    """A session token when the caller has one; anonymous calls are answered too."""

    security: ClassVar[list[dict[str, list[str]]]] = [{"bearerAuth": []}, {}]


class SchemaView(SpectacularAPIView):
    """``GET /openapi.yaml``: the generated schema, YAML unless JSON is asked for."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    renderer_classes = [
        OpenApiYamlRenderer2,  # application/yaml: docs/COMPATIBILITY.md#c-14
        OpenApiYamlRenderer,
        OpenApiJsonRenderer2,
        OpenApiJsonRenderer,
    ]
    # The schema depends only on the code: generate it once per process, not per request.
    _schema: ClassVar[dict[str, Any] | None] = None

    def _get_schema_response(self, request: Request) -> Response:
        if SchemaView._schema is None:
            SchemaView._schema = super()._get_schema_response(request).data
        return Response(SchemaView._schema)


class DocsView(TemplateView):
    """``GET /docs``: a self-contained page that reads ``/openapi.yaml`` and lists it."""

    template_name = "docs.html"
