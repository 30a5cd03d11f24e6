"""Remote runtimes and join tokens; provider keys and usage.

Minting shows the join token's secret once, on the answer to the POST itself (never
stored, never in a redirect or a message). The runtimes list refreshes itself while the
page is open, so a runtime that registers with the token appears without a reload.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.principals import Actor
from accounts.ratelimit import client_ip
from accounts.selectors import providers_of
from accounts.services.providers import provider_delete, provider_update, provider_upsert
from accounts.services.usage import usage_summary
from matrixcloud.console.access import workspace_view
from matrixcloud.console.forms import JoinTokenForm, ProviderForm
from matrixcloud.errors import ApplicationError
from runtimes.selectors import join_token_get, join_tokens_list, runtimes_list
from runtimes.services import join_token_issue, join_token_revoke


@require_http_methods(["GET", "POST"])
@workspace_view
def runtimes(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = JoinTokenForm(request.POST if request.method == "POST" else None)
    minted = None
    if request.method == "POST" and form.is_valid():
        try:
            actor.require_manager("mint join tokens")
            minted = join_token_issue(
                workspace=actor.workspace,
                actor=actor.id,
                created_by=actor.user,
                ip=client_ip(request),
                label=form.cleaned_data["label"],
                max_uses=form.cleaned_data["max_uses"],
                ttl_minutes=form.cleaned_data["ttl_minutes"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            form = JoinTokenForm()
    workspace = actor.visible_workspace
    context = {
        "runtimes": runtimes_list(workspace=workspace),
        "join_tokens": join_tokens_list(workspace=workspace),
        "form": form,
        "minted": minted,
        "can_manage": actor.can_manage,
    }
    response = render(request, "console/runtimes.html", context, status=400 if form.errors else 200)
    if minted is not None:
        response["Cache-Control"] = "no-store"  # the secret is on this page only
    return response


@require_POST
@workspace_view
def join_token_revoke_view(request: HttpRequest, actor: Actor, token_id: str) -> HttpResponse:
    token = join_token_get(workspace=actor.visible_workspace, token_id=token_id)
    actor.require_manager("revoke join tokens")
    join_token_revoke(token=token, actor=actor.id, ip=client_ip(request))
    messages.info(request, f"Join token {token.pk} revoked.")
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
                workspace=actor.workspace,
                provider=data["provider"],
                label=data["label"] or None,
                secret=data["secret"],
                usable_by_members=data["usable_by_members"],
                actor=actor.id,
                user=actor.user,
                ip=client_ip(request),
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
    provider_delete(
        workspace=actor.workspace,
        credential_id=credential_id,
        actor=actor.id,
        ip=client_ip(request),
    )
    messages.info(request, "Provider key deleted.")
    return redirect("console:providers")


@require_POST
@workspace_view
def provider_members_view(request: HttpRequest, actor: Actor, credential_id: str) -> HttpResponse:
    """Let members use a key, or stop them (the button says which: ``usable`` 1 or 0)."""
    actor.require_manager("change provider credentials")
    credential = provider_update(
        workspace=actor.workspace,
        credential_id=credential_id,
        usable_by_members=request.POST.get("usable") == "1",
        actor=actor.id,
        ip=client_ip(request),
    )
    state = "may" if credential.usable_by_members else "may no longer"
    messages.info(request, f"Members {state} use {credential.provider}/{credential.label}.")
    return redirect("console:providers")
