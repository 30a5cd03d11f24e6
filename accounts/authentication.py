"""DRF authentication for users: bearer session tokens and the console's cookie session.

The operator token and the anonymous local-dev caller (``matrixcloud.api.authentication``)
come last in the chain, so a signed-in user is always themselves, even on a local-dev
loopback where anonymous callers act as the local workspace's Owner.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request

from accounts.models import SessionToken, User
from matrixcloud.api.authentication import bearer_token
from matrixcloud.lib.tokens import secret_hash


def session_for_token(token: str) -> SessionToken | None:
    """The usable session for a presented bearer token, extending its idle expiry."""
    if not token:
        return None
    now = timezone.now()
    session = (
        SessionToken.objects.usable(now)
        .select_related("user", "workspace")
        .filter(token_hash=secret_hash(token), user__is_active=True)
        .first()
    )
    if session is None:
        return None
    session.touch(now)
    return session


class SessionTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <session token>`` from signup or login."""

    def authenticate(self, request: Request) -> tuple[User, SessionToken] | None:
        session = session_for_token(bearer_token(request._request))
        if session is None:
            return None
        return session.user, session

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="matrixcloud"'


class ConsoleSessionAuthentication(SessionAuthentication):
    """Django's session cookie (the web console; browser SSE); CSRF-checked on writes."""

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        if bearer_token(request._request):
            return None  # an explicit bearer token decides; never mix it with a cookie
        return super().authenticate(request)
