"""Remote runtimes and join tokens; provider keys and usage.

A secret (a minted join token's, a rotated runtime token) is shown exactly once, with
post/redirect/get: the POST that makes it keeps it in the console session and redirects;
the next GET of the runtimes page takes it out of the session and shows it, uncached.
A reload of that page shows no secret and makes none (never in a URL, a message or a
redirect). Removing a runtime and rotating or revoking its token call the API's own
services with the API's checks (another workspace's runtime is a 404, a Member a 403).
The lists follow the workspace's activity stream while the page is open, so a runtime
that registers with the token appears without a reload.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.principals import Actor
from accounts.selectors import providers_of
from accounts.services.providers import provider_delete, provider_update, provider_upsert
from accounts.services.usage import usage_summary
from matrixcloud.console.access import workspace_view
from matrixcloud.console.forms import JoinTokenForm, ProviderForm
from matrixcloud.errors import ApplicationError
from runtimes.models import Runtime
from runtimes.selectors import join_token_get, join_tokens_list, runtime_get, runtimes_list
from runtimes.services import (
    join_token_issue,
    join_token_revoke,
    runtime_remove,
    runtime_token_revoke,
    runtime_token_rotate,
)

# Session key of the one secret waiting for its single showing.
SECRET_ONCE_KEY = "console.secret_once"  # noqa: S105 (a session key name, no secret)


def _keep_secret_once(request: HttpRequest, kind: str, target: str, secret: str) -> HttpResponse:
    """Hold ``secret`` for the next GET of the runtimes page only, and redirect there."""
    request.session[SECRET_ONCE_KEY] = {"kind": kind, "target": target, "secret": secret}
    return redirect("console:runtimes")


def _take_secret_once(request: HttpRequest) -> dict[str, str] | None:
    """The waiting secret, removed from the session as it is read (shown once)."""
    held = request.session.pop(SECRET_ONCE_KEY, None)
    return held if isinstance(held, dict) else None


def _runtimes_page(request: HttpRequest, actor: Actor, form: JoinTokenForm) -> HttpResponse:
    workspace = actor.visible_workspace
    once = _take_secret_once(request) if request.method == "GET" else None
    context: dict[str, Any] = {
        "runtimes": runtimes_list(workspace=workspace),
        "join_tokens": join_tokens_list(workspace=workspace),
        "form": form,
        "once": once,
        "can_manage": actor.can_manage,
    }
    response = render(request, "console/runtimes.html", context, status=400 if form.errors else 200)
    if once is not None:
        response["Cache-Control"] = "no-store"  # the secret is on this answer only
    return response


@require_http_methods(["GET", "POST"])
@workspace_view
def runtimes(request: HttpRequest, actor: Actor) -> HttpResponse:
    if request.method == "GET":
        return _runtimes_page(request, actor, JoinTokenForm())
    form = JoinTokenForm(request.POST)
    if form.is_valid():
        try:
            actor.require_manager("mint join tokens")
            minted = join_token_issue(
                actor=actor,
                label=form.cleaned_data["label"],
                max_uses=form.cleaned_data["max_uses"],
                ttl_minutes=form.cleaned_data["ttl_minutes"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return _keep_secret_once(request, "join", minted.token.pk, minted.secret)
    return _runtimes_page(request, actor, form)


@require_POST
@workspace_view
def join_token_revoke_view(request: HttpRequest, actor: Actor, token_id: str) -> HttpResponse:
    token = join_token_get(workspace=actor.visible_workspace, token_id=token_id)
    actor.require_manager("revoke join tokens")
    join_token_revoke(token=token, actor=actor)
    messages.info(request, f"Join token {token.pk} revoked.")
    return redirect("console:runtimes")


def _managed_runtime(actor: Actor, runtime_id: str, what: str) -> Runtime:
    """The workspace's runtime (404 for anyone else's), then the API's role check (403)."""
    runtime = runtime_get(workspace=actor.visible_workspace, runtime_id=runtime_id)
    actor.require_manager(what)
    return runtime


@require_POST
@workspace_view
def runtime_remove_view(request: HttpRequest, actor: Actor, runtime_id: str) -> HttpResponse:
    runtime = _managed_runtime(actor, runtime_id, "remove runtimes")
    runtime_remove(runtime=runtime, actor=actor)
    messages.info(request, f"Runtime {runtime.name} ({runtime.pk}) removed; its token is void.")
    return redirect("console:runtimes")


@require_POST
@workspace_view
def runtime_token_rotate_view(request: HttpRequest, actor: Actor, runtime_id: str) -> HttpResponse:
    runtime = _managed_runtime(actor, runtime_id, "rotate runtime tokens")
    issued = runtime_token_rotate(runtime=runtime, actor=actor)
    return _keep_secret_once(request, "runtime", issued.runtime.pk, issued.token)


@require_POST
@workspace_view
def runtime_token_revoke_view(request: HttpRequest, actor: Actor, runtime_id: str) -> HttpResponse:
    runtime = _managed_runtime(actor, runtime_id, "revoke runtime tokens")
    runtime_token_revoke(runtime=runtime, actor=actor)
    messages.info(request, f"The token of {runtime.name} ({runtime.pk}) is revoked.")
    return redirect("console:runtimes")


@require_http_methods(["GET", "POST"])
@workspace_view
def providers(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = ProviderForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            actor.require_manager("store provider credentials")
            credential = provider_upsert(
                provider=data["provider"],
                label=data["label"] or None,
                secret=data["secret"],
                usable_by_members=data["usable_by_members"],
                actor=actor,
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Saved {credential.provider} key {credential.hint}.")
            return redirect("console:providers")
    context = {
        "providers": providers_of(workspace=actor.workspace),
        "usage": usage_summary(workspace=actor.workspace),
        "form": form,
        "can_manage": actor.can_manage,
    }
    return render(request, "console/providers.html", context, status=400 if form.errors else 200)


@require_POST
@workspace_view
def provider_delete_view(request: HttpRequest, actor: Actor, credential_id: str) -> HttpResponse:
    actor.require_manager("delete provider credentials")
    provider_delete(credential_id=credential_id, actor=actor)
    messages.info(request, "Provider key deleted.")
    return redirect("console:providers")


@require_POST
@workspace_view
def provider_members_view(request: HttpRequest, actor: Actor, credential_id: str) -> HttpResponse:
    """Let members use a key, or stop them (the button says which: ``usable`` 1 or 0)."""
    actor.require_manager("change provider credentials")
    credential = provider_update(
        credential_id=credential_id,
        usable_by_members=request.POST.get("usable") == "1",
        actor=actor,
    )
    state = "may" if credential.usable_by_members else "may no longer"
    messages.info(request, f"Members {state} use {credential.provider}/{credential.label}.")
    return redirect("console:providers")
