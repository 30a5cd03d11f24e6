"""JSON answers for what no view handles under /v1/ (the original answered plain text:
docs/COMPATIBILITY.md#f-02).

Django's own 400 (a disallowed Host header: DNS rebinding) and 500 pages become the
contract's error shape for API paths; other paths keep Django's pages.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from matrixcloud.errors import error_payload


def json_error(message: str, status: int) -> JsonResponse:
    return JsonResponse(
        error_payload(message, status),
        status=status,
        json_dumps_params={"separators": (",", ":")},
    )


@csrf_exempt
def api_not_found(request: HttpRequest) -> JsonResponse:
    """Any method on an unknown /v1/ path: 404 in the contract's error shape."""
    return json_error(f"no such endpoint: {request.path}", 404)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/v1/"):
        return json_error(f"bad request: {exception}", 400)
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/v1/"):
        return json_error("internal server error", 500)
    return defaults.server_error(request)
