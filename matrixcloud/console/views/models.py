"""Models: search Hugging Face, import a model as a profile, attach it to a runtime
(install mode, serving engine), and the installations with live progress bars.

Importing is the API's two calls in one click: ``source_resolve`` (the live preview at
the branch) then ``profile_import`` with that preview, as a client of
``/v1/model-sources/resolve`` and ``/v1/model-profiles`` does. Each installation's bar
follows its ``model.attach`` job's events (``/v1/jobs/<id>/events``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.principals import Actor
from matrixcloud.console.access import workspace_view
from matrixcloud.console.forms import AttachForm, ImportForm, ModelSearchForm
from matrixcloud.errors import ApplicationError
from models_registry.selectors import installation_list, profile_get, profile_list
from models_registry.services import (
    hf_search,
    profile_attach,
    profile_import,
    source_resolve,
)
from runtimes.selectors import runtimes_list

SEARCH_LIMIT = 20
# What the preview says about a model that the profile keeps as its metadata.
PREVIEW_METADATA = (
    "revision", "commit", "requires_gpu", "recommended_runtime", "estimated_parameters",
    "size_bytes", "gated", "private",
)  # fmt: skip


def runtime_choices(actor: Actor) -> list[tuple[str, str]]:
    """This installation, then the workspace's registered runtimes."""
    local = settings.MATRIX_RUNTIME_ID
    registered = runtimes_list(workspace=actor.workspace)
    return [(local, f"{local} (this installation)")] + [
        (runtime.pk, f"{runtime.name} ({runtime.effective_status()})") for runtime in registered
    ]


def _page(request: HttpRequest, actor: Actor, status: int = 200, **extra: Any) -> HttpResponse:
    search = ModelSearchForm(request.GET or None)
    results = None
    if search.is_valid() and search.cleaned_data["q"]:
        results = hf_search(
            query=search.cleaned_data["q"], task=search.cleaned_data["task"], limit=SEARCH_LIMIT
        )
    runtimes = runtime_choices(actor)
    failed: AttachForm | None = extra.pop("attach_form", None)
    failed_for = extra.pop("attach_profile", "")
    profiles = [
        (
            profile,
            failed
            if profile.pk == failed_for and failed is not None
            else AttachForm(runtimes=runtimes, auto_id=f"attach-{profile.pk}-%s"),
        )
        for profile in profile_list(workspace=actor.workspace)
    ]
    context = {
        "search": search,
        "results": results,
        "profiles": profiles,
        "installations": installation_list(workspace=actor.workspace),
        "import_form": ImportForm(),
        **extra,
    }
    return render(request, "console/models.html", context, status=status)


@require_GET
@workspace_view
def models(request: HttpRequest, actor: Actor) -> HttpResponse:
    return _page(request, actor)


@require_POST
@workspace_view
def model_import(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = ImportForm(request.POST)
    if not form.is_valid():
        return _page(request, actor, 400, import_form=form)
    source = {
        "sourceType": "huggingface",
        "externalId": form.cleaned_data["external_id"],
        "branch": form.cleaned_data["branch"],
    }
    try:
        preview = source_resolve(workspace=actor.workspace, data=source)
        metadata = {key: preview[key] for key in PREVIEW_METADATA if key in preview}
        profile = profile_import(actor=actor, data={**preview, "metadata": metadata})
    except ApplicationError as exc:
        form.add_error(None, exc.message)
        return _page(request, actor, 400, import_form=form)
    messages.success(request, f"Imported {profile.display_name}.")
    return redirect("console:models")


@require_POST
@workspace_view
def model_attach(request: HttpRequest, actor: Actor, profile_id: str) -> HttpResponse:
    profile = profile_get(workspace=actor.workspace, profile_id=profile_id)
    form = AttachForm(
        request.POST, runtimes=runtime_choices(actor), auto_id=f"attach-{profile.pk}-%s"
    )
    if not form.is_valid():
        return _page(request, actor, 400, attach_form=form, attach_profile=profile.pk)
    data = form.cleaned_data
    try:
        installation, _job = profile_attach(
            actor=actor,
            profile=profile,
            runtime_id=data["runtime_id"],
            install_mode=data["install_mode"],
            serving_engine=data["serving_engine"],
            source_path=data["path"],
            endpoint_url=data["endpoint_url"],
        )
    except ApplicationError as exc:
        form.add_error(None, exc.message)
        return _page(request, actor, 400, attach_form=form, attach_profile=profile.pk)
    messages.success(request, f"Installing {profile.display_name} ({installation.pk}).")
    return redirect("console:models")
