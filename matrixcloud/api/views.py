"""Platform endpoints: health, version, readiness, capabilities, policies, storage."""

from __future__ import annotations

from django.conf import settings
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class HealthView(APIView):
    """Liveness and identity; always open."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response(
            {
                "status": "ok",
                "runtime_id": settings.MATRIX_RUNTIME_ID,
                "mode": settings.MATRIX_MODE,
                "version": settings.VERSION,
            }
        )
