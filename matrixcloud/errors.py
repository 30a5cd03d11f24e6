"""The error hierarchy every service raises.

Services raise these and never build HTTP responses; the one DRF exception handler
(`matrixcloud.api.exceptions`) renders each as the contract's error shape,
``{"error": message, "status": code}``.
"""

from __future__ import annotations

from typing import Any


def error_payload(message: str, status: int) -> dict[str, Any]:
    """The contract's error body, ``{"error": message, "status": status}``: the one
    place it is built (the DRF handler, the JSON fallbacks, the ASGI lanes)."""
    return {"error": message, "status": status}


class ApplicationError(Exception):
    """A failure the caller can understand and act on."""

    http_status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None, *, http_status: int | None = None) -> None:
        self.message = message or self.default_message
        if http_status is not None:
            self.http_status = http_status
        super().__init__(self.message)


class BadRequest(ApplicationError):
    """Malformed input: bad JSON, an unknown job type, a wrong type of value."""

    http_status = 400
    default_message = "bad request"


class Unauthorized(ApplicationError):
    """No credentials, or credentials that are not valid."""

    http_status = 401
    default_message = "authentication required"


class Forbidden(ApplicationError):
    """Valid credentials that may not do this (role, feature flag, policy)."""

    http_status = 403
    default_message = "forbidden"


class NotFound(ApplicationError):
    """No such object, or one that belongs to another workspace."""

    http_status = 404
    default_message = "not found"


class Conflict(ApplicationError):
    """The object exists but is not in a state that allows this."""

    http_status = 409
    default_message = "conflict"


class PayloadTooLarge(ApplicationError):
    """The request body is larger than the configured limit."""

    http_status = 413
    default_message = "request body too large"


class UnprocessableEntity(ApplicationError):
    """Well-formed input that breaks a rule (TTL range, payload schema, policy)."""

    http_status = 422
    default_message = "unprocessable entity"


class RateLimited(ApplicationError):
    """Too many requests; ``retry_after`` seconds until the window resets."""

    http_status = 429
    default_message = "rate limit exceeded — slow down and retry"

    def __init__(self, message: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(ApplicationError):
    """A service beyond this one (Hugging Face, a remote runtime) failed."""

    http_status = 502
    default_message = "upstream error"


class ServiceUnavailable(ApplicationError):
    """A dependency of this installation (database, bus) is not available."""

    http_status = 503
    default_message = "service unavailable"
