"""The gate: which callers may use gated endpoints."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from matrixcloud.api.authentication import require_principal


class PassesGate(BasePermission):
    """Any recognised principal: the operator, or (with accounts) a user session."""

    def has_permission(self, request: Request, view: Any) -> bool:
        require_principal(request)
        return True
