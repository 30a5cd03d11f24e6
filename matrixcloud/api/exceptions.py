"""One exception handler: every 4xx/5xx is ``{"error": message, "status": code}``."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

from matrixcloud.errors import ApplicationError, RateLimited, error_payload

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "database unavailable"


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """Turn DRF's nested validation detail into ``field: message`` lines."""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            lines.extend(_flatten(value, f"{prefix}.{name}" if prefix and name else name))
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    text = str(detail)
    return [f"{prefix}: {text}" if prefix else text]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        response = Response(error_payload(exc.message, exc.http_status), status=exc.http_status)
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(error_payload("request body too large", 413), status=413)
    if isinstance(exc, Http404):
        return Response(error_payload("not found", 404), status=404)
    if isinstance(exc, PermissionDenied):
        return Response(error_payload("forbidden", 403), status=403)
    if isinstance(exc, drf.ValidationError):
        message = "; ".join(_flatten(exc.detail)) or "invalid request"
        return Response(error_payload(message, 400), status=400)
    if isinstance(exc, drf.APIException):
        status = exc.status_code
        message = "; ".join(_flatten(exc.detail)) if exc.detail else str(exc)
        response = Response(error_payload(message, status), status=status)
        wait = getattr(exc, "wait", None)
        if isinstance(exc, drf.Throttled) and wait is not None:
            response["Retry-After"] = str(int(wait) + 1)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="matrixcloud"'
        return response
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("database unavailable in %s: %s", context.get("view"), exc)
        return database_unavailable()
    logger.exception("unhandled error in %s", context.get("view"))
    return Response(error_payload("internal server error", 500), status=500)


def database_unavailable() -> Response:
    """503: the database cannot be reached (restarting, or SQLite busy past its timeout);
    nothing was done, and the client may retry."""
    response = Response(error_payload(DATABASE_UNAVAILABLE, 503), status=503)
    response["Retry-After"] = "1"
    return response
