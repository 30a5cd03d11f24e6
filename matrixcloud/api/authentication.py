"""Who is calling: DRF authentication for the API gate.

The operator token (``MATRIX_RUNTIME_API_TOKEN``) makes the caller an administrator
across workspaces; nothing else does. In local-dev with no operator token, an
anonymous caller on loopback is the :class:`LocalDevPrincipal`: the Owner of the one
local workspace, on the endpoints the original server opened to it (see
``matrixcloud.api.permissions`` and docs/COMPATIBILITY.md#c-05), so the original smoke flows and
client work. It is
never the operator. Production modes never allow anonymous access. Session tokens are
added by the accounts app.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from matrixcloud.errors import Unauthorized


@dataclass(frozen=True)
class OperatorPrincipal:
    """The operator of this installation; ``via`` says how they were recognised."""

    via: str
    is_authenticated: bool = True
    is_operator: bool = True
    is_anonymous: bool = False


@dataclass(frozen=True)
class LocalDevPrincipal:
    """The anonymous loopback caller of a local-dev installation with no operator token.

    It passes the gate, but it is not the operator: ``accounts.principals`` makes it the
    Owner of the local workspace and nothing more, and the gate keeps it to the
    endpoints the original answered without a token.
    """

    via: str = "local-dev"
    is_authenticated: bool = True
    is_operator: bool = False
    is_local_dev: bool = True
    is_anonymous: bool = False


def bearer_token(request: HttpRequest) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


def is_loopback(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def operator_token_matches(token: str) -> bool:
    expected = settings.MATRIX_API_TOKEN
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def anonymous_is_local_dev(request: HttpRequest) -> bool:
    """Whether a request without a token is the local-dev caller (else it is refused)."""
    return (
        settings.MATRIX_MODE == "local-dev"
        and not settings.MATRIX_API_TOKEN
        and is_loopback(request)
    )


class OperatorTokenAuthentication(BaseAuthentication):
    """The bearer operator token; else, without a token, the local-dev loopback caller."""

    def authenticate(
        self, request: Request
    ) -> tuple[OperatorPrincipal | LocalDevPrincipal, str | None] | None:
        token = bearer_token(request._request)
        if token:
            if operator_token_matches(token):
                return OperatorPrincipal(via="token"), token
            return None
        if anonymous_is_local_dev(request._request):
            return LocalDevPrincipal(), None
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="matrixcloud"'


def caller_is_local_dev(request: Request) -> bool:
    return getattr(request.user, "is_local_dev", False) is True


def require_principal(request: Request) -> None:
    """Raise the gate's 401 unless some authentication class recognised the caller."""
    if getattr(request.user, "is_authenticated", False):
        return
    if bearer_token(request._request):
        raise Unauthorized("missing or invalid bearer token")
    raise Unauthorized("authentication required")
