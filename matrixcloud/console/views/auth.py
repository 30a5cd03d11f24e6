"""Sign up, sign in, sign out, forgotten password, reset, email verification, invitations.

Each page calls the account service the API calls (``accounts.services``), then keeps
the person signed in with Django's session cookie in the workspace the service chose.
The bearer session the service issues is remembered in the cookie session, so signing
out of the console revokes it (and is audited) like ``/v1/auth/logout``. The email
links (``/verify``, ``/reset``, ``/invite``) land here; opening one changes nothing
until the person submits its form (mail scanners prefetch links).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login as django_login
from django.contrib.auth import logout as django_logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from accounts.api.views import FORGOT_MESSAGE
from accounts.models import SessionToken
from accounts.services import (
    IssuedSession,
    email_verification_resend,
    email_verify,
    invitation_accept,
    password_reset_complete,
    password_reset_request,
    session_revoke,
    user_login,
    user_signup,
)
from matrixcloud.console.access import SESSION_TOKEN_KEY, WORKSPACE_KEY
from matrixcloud.console.forms import (
    ForgotForm,
    InviteAcceptForm,
    LoginForm,
    ResetForm,
    SignupForm,
    TokenForm,
)
from matrixcloud.errors import ApplicationError
from matrixcloud.lib.addresses import client_ip
from matrixcloud.lib.ratelimit import api_write_check

HOME = "console:overview"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _meta(request: HttpRequest) -> dict[str, str]:
    return {"ip": client_ip(request), "user_agent": request.headers.get("User-Agent", "")[:300]}


def _data(request: HttpRequest) -> QueryDict | None:
    return request.POST if request.method == "POST" else None


def _sign_in(request: HttpRequest, issued: IssuedSession) -> None:
    django_login(request, issued.membership.user, backend=MODEL_BACKEND)
    request.session[WORKSPACE_KEY] = issued.membership.workspace_id
    request.session[SESSION_TOKEN_KEY] = issued.session.pk


def _next_url(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(wanted, {request.get_host()}):
        return wanted
    return ""


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(_data(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            api_write_check(request)
            issued = user_signup(
                name=data["name"],
                email=data["email"],
                password=data["password"],
                workspace_name=data["workspace"],
                **_meta(request),
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            _sign_in(request, issued)
            messages.success(request, "Welcome! We sent you a link to verify your email.")
            return redirect(HOME)
    return render(request, "console/auth/signup.html", {"form": form}, status=_status(form))


@require_http_methods(["GET", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    form = LoginForm(_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            api_write_check(request)
            issued = user_login(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                **_meta(request),
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            _sign_in(request, issued)
            return redirect(_next_url(request) or HOME)
    context = {"form": form, "next": _next_url(request)}
    return render(request, "console/auth/login.html", context, status=_status(form))


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    token_id = request.session.get(SESSION_TOKEN_KEY)
    session = SessionToken.objects.filter(pk=token_id).first() if token_id else None
    if session is not None:
        session_revoke(session=session, ip=client_ip(request))
    django_logout(request)
    messages.info(request, "You are signed out.")
    return redirect("console:login")


@require_http_methods(["GET", "POST"])
def forgot(request: HttpRequest) -> HttpResponse:
    form = ForgotForm(_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            api_write_check(request)
            password_reset_request(email=form.cleaned_data["email"], ip=client_ip(request))
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.info(request, FORGOT_MESSAGE)
            return redirect("console:login")
    return render(request, "console/auth/forgot.html", {"form": form}, status=_status(form))


@require_http_methods(["GET", "POST"])
def reset(request: HttpRequest) -> HttpResponse:
    form = ResetForm(_data(request), initial={"token": request.GET.get("token", "")})
    if request.method == "POST" and form.is_valid():
        try:
            api_write_check(request)
            password_reset_complete(
                token=form.cleaned_data["token"],
                password=form.cleaned_data["password"],
                ip=client_ip(request),
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            django_logout(request)  # the reset ended every session
            messages.success(request, "Your password has been updated. Please sign in.")
            return redirect("console:login")
    return render(request, "console/auth/reset.html", {"form": form}, status=_status(form))


@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    form = TokenForm(_data(request), initial={"token": request.GET.get("token", "")})
    verified = False
    if request.method == "POST" and form.is_valid():
        try:
            api_write_check(request)
            email_verify(token=form.cleaned_data["token"], ip=client_ip(request))
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            verified = True
    context = {"form": form, "verified": verified}
    return render(request, "console/auth/verify.html", context, status=_status(form))


@login_required
@require_POST
def verify_resend(request: HttpRequest) -> HttpResponse:
    try:
        api_write_check(request)
        sent = email_verification_resend(user=request.user)  # type: ignore[arg-type]
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.info(
            request, "A new verification link is on its way." if sent else "Email already verified."
        )
    return redirect(HOME)


@require_http_methods(["GET", "POST"])
def invite(request: HttpRequest) -> HttpResponse:
    form = InviteAcceptForm(_data(request), initial={"token": request.GET.get("token", "")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            api_write_check(request)
            issued = invitation_accept(
                token=data["token"], password=data["password"], name=data["name"], **_meta(request)
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            _sign_in(request, issued)
            messages.success(request, f"You joined {issued.membership.workspace.name}.")
            return redirect(HOME)
    return render(request, "console/auth/invite.html", {"form": form}, status=_status(form))


def _status(form: TokenForm | SignupForm | LoginForm | ForgotForm) -> int:
    """400 for a submitted form with errors (a browser shows it; a script can tell)."""
    return 400 if form.is_bound and form.errors else 200
