"""JSON answers for what no view handles under /v1/ (the original answered plain text)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def api_not_found(request: HttpRequest) -> JsonResponse:
    """Any method on an unknown /v1/ path: 404 in the contract's error shape."""
    return JsonResponse(
        {"error": f"no such endpoint: {request.path}", "status": 404},
        status=404,
        json_dumps_params={"separators": (",", ":")},
    )
