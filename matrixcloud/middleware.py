"""Checks every ``/v1/`` request passes before it reaches a view.

A loopback API is still reachable from any page the user's browser visits (MCP
Inspector's CVE-2025-49596), so writes from a foreign ``Origin`` are refused and a
write with a body must be ``application/json`` (no simple-request CSRF). Oversized
bodies are refused by their declared length before anything reads them, and a URL
holding a NUL (``%00``) is refused before any view looks it up.

Every response also gets a ``Content-Security-Policy``: the pages load script and
style from ``/static/`` only, so markup injected into one of them does not run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

from matrixcloud.api.fallback import json_error
from matrixcloud.errors import RateLimited
from matrixcloud.lib.ratelimit import after_write, api_write_check, api_write_check_async

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _origin_allowed(request: HttpRequest, origin: str) -> bool:
    if origin in getattr(settings, "MATRIX_ALLOWED_ORIGINS", ()):
        return True
    try:
        host = request.get_host()
    except DisallowedHost:
        return False
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()


def check_api_request(request: HttpRequest) -> HttpResponse | None:
    """The refusal for ``request``, or None when it may proceed."""
    if not request.path.startswith("/v1/"):
        return None
    if "\x00" in request.path or any(
        "\x00" in key or any("\x00" in value for value in values)
        for key, values in request.GET.lists()
    ):  # no id, filter or cursor holds one, and PostgreSQL refuses it in a query (a 500)
        return json_error("invalid URL: NUL character (%00) in the path or query", 400)
    length = request.META.get("CONTENT_LENGTH") or "0"
    try:
        declared = int(length)
    except ValueError:
        return json_error("invalid Content-Length", 400)
    if declared > settings.MATRIX_MAX_BODY_BYTES:
        return json_error(
            f"request body too large (limit {settings.MATRIX_MAX_BODY_BYTES} bytes)", 413
        )
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin and origin != "null" and not _origin_allowed(request, origin):
        return json_error(f"cross-origin request refused (Origin {origin})", 403)
    if origin == "null":
        return json_error("cross-origin request refused (Origin null)", 403)
    if declared > 0:
        content_type = request.content_type or ""
        if content_type != "application/json":
            return json_error("request body must be application/json", 415)
    return None


def check_write_rate(request: HttpRequest) -> HttpResponse | None:
    """Count an API write against its budget (every write, even one refused later)."""
    if not _is_api_write(request):
        return None
    try:
        api_write_check(request)
    except RateLimited as exc:
        return _limited(exc)
    return None


async def check_write_rate_async(request: HttpRequest) -> HttpResponse | None:
    """:func:`check_write_rate` on the event loop (no thread: the count is on the bus)."""
    if not _is_api_write(request):
        return None
    try:
        await api_write_check_async(request)
    except RateLimited as exc:
        return _limited(exc)
    return None


def note_write(request: HttpRequest, response: HttpResponse) -> None:
    """After an API write: let the limiter learn whether its credential authenticated."""
    if _is_api_write(request):
        after_write(request, response.status_code)


def _is_api_write(request: HttpRequest) -> bool:
    return request.path.startswith("/v1/") and request.method not in SAFE_METHODS


def _limited(exc: RateLimited) -> HttpResponse:
    response = json_error(exc.message, exc.http_status)
    response["Retry-After"] = str(exc.retry_after)
    return response


class DualMiddleware:
    """Base of a middleware that runs in sync and async stacks: it is marked a
    coroutine function when the next one is, and ``__call__`` picks the path."""

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # type: ignore[type-var]  # subclasses define __call__


class ApiGuardMiddleware(DualMiddleware):
    """Write rate limit, body limit, Origin and Content-Type checks for the API.

    Works in sync and async stacks; the rate limiter counts on the bus (on the event
    loop in the async case), and only writes (never event streams).
    """

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        refusal = check_write_rate(request) or check_api_request(request)
        if refusal is not None:
            return refusal
        response = self.get_response(request)
        note_write(request, response)  # type: ignore[arg-type]
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        refusal = await check_write_rate_async(request) or check_api_request(request)
        if refusal is not None:
            return refusal
        response: HttpResponse = await self.get_response(request)  # type: ignore[misc]
        note_write(request, response)
        return response


# Every page this server renders (console, admin, /docs, error pages) loads its script
# and style from /static/ only: an injected <script> or on*= attribute does not run.
HTML_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
# JSON, event streams and static files are never documents a browser should run.
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"


def add_content_security_policy(response: HttpResponse) -> HttpResponse:
    """Give ``response`` its policy, unless a view set one of its own."""
    if "Content-Security-Policy" not in response:
        html = response.get("Content-Type", "").startswith("text/html")
        response["Content-Security-Policy"] = HTML_POLICY if html else OTHER_POLICY
    return response


class ContentSecurityPolicyMiddleware(DualMiddleware):
    """The ``Content-Security-Policy`` header on every response, refusals included.

    Outermost in ``MIDDLEWARE`` so the API guard's refusals and WhiteNoise's files get
    it too; works in sync and async stacks (streams pass through unread).
    """

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        return add_content_security_policy(self.get_response(request))  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return add_content_security_policy(await self.get_response(request))  # type: ignore[misc]
