"""DRF throttle: every API write counts against its client IP (shared across processes)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from accounts.ratelimit import client_ip, rate_limit_hit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class WriteRateThrottle(BaseThrottle):
    """``MATRIX_RUNTIME_RATE_LIMIT_RPM`` writes per client IP per minute; 429 beyond."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        rate_limit_hit(f"ip:{client_ip(request._request)}", settings.MATRIX_RATE_LIMIT_RPM)
        return True
