"""Who is acting on a console page, scoped exactly as the API scopes a request.

A console page is a Django view signed in by the session cookie. ``console_actor``
hands the signed-in user to ``accounts.principals.actor_for`` (the function every API
view asks), so the workspace, role and tenancy rules are the API's own. Domain errors
become pages: another workspace's object is a 404 (never a 403, never a leak).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from django.contrib.auth import logout as django_logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone
from rest_framework.request import ForcedAuthentication, Request

from accounts.models import SessionToken
from accounts.principals import Actor, actor_for
from matrixcloud.errors import Forbidden, NotFound, Unauthorized

P = ParamSpec("P")
R = TypeVar("R", bound=HttpResponseBase)
WORKSPACE_KEY = "workspace_id"
SESSION_TOKEN_KEY = "session_token_id"  # noqa: S105 (a session key name, no secret)


def console_actor(request: HttpRequest) -> Actor:
    """The actor of a signed-in console request (its chosen workspace, its role there)."""
    forced = ForcedAuthentication(request.user, None)
    api_request = Request(request, authenticators=[forced])  # type: ignore[list-item]
    return actor_for(api_request)


def console_session_live(request: HttpRequest) -> bool:
    """Whether the session the console's sign-in started is still usable.

    Signing in through the console issues a bearer session (``SessionToken``) next to
    the cookie; when it ends (``/v1/auth/logout?all=true``, a password reset, an
    operator's revoke, its expiry) the console session ends too. It is kept alive with
    the same idle rule as a bearer token in use.
    """
    token_id = request.session.get(SESSION_TOKEN_KEY)
    if not token_id:
        return True  # signed in some other way (Django admin): Django's session decides
    now = timezone.now()
    token = SessionToken.objects.usable(now).filter(pk=token_id, user_id=request.user.pk).first()
    if token is None:
        return False
    token.touch(now)
    return True


def error_page(request: HttpRequest, message: str, status: int) -> HttpResponse:
    return render(request, "console/error.html", {"message": message}, status=status)


def workspace_view(
    view: Callable[Concatenate[HttpRequest, Actor, P], R],
) -> Callable[Concatenate[HttpRequest, P], R | HttpResponse]:
    """A signed-in page (or stream) acting in the user's workspace; domain refusals
    become pages."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> R | HttpResponse:
        if not console_session_live(request):
            django_logout(request)
            return redirect_to_login(request.get_full_path())
        try:
            return view(request, console_actor(request), *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        except (Forbidden, Unauthorized) as exc:
            return error_page(request, exc.message, exc.http_status)

    return login_required(wrapped)


def manager_view(
    what: str,
) -> Callable[
    [Callable[Concatenate[HttpRequest, Actor, P], HttpResponse]],
    Callable[Concatenate[HttpRequest, P], HttpResponse],
]:
    """Like ``workspace_view`` for pages only an Owner or Admin may use (403 otherwise)."""

    def decorate(
        view: Callable[Concatenate[HttpRequest, Actor, P], HttpResponse],
    ) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, actor: Actor, *args: Any, **kwargs: Any) -> HttpResponse:
            actor.require_manager(what)
            return view(request, actor, *args, **kwargs)

        return workspace_view(checked)

    return decorate
