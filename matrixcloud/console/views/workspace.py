"""Workspace pages: overview, catalog, members and invitations, audit log."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import User
from accounts.principals import Actor
from accounts.selectors import audit_page, invitations_pending, members_of
from accounts.services import invitation_create
from matrixcloud.console.access import WORKSPACE_KEY, error_page, manager_view, workspace_view
from matrixcloud.console.forms import InviteForm, LaunchForm
from matrixcloud.console.selectors import job_counts, live_sessions_count, memberships_of
from matrixcloud.errors import ApplicationError
from matrixcloud.platform.readiness import readiness_report
from models_registry.catalog import catalog_items
from runtimes.selectors import capabilities_describe
from sandbox.enforcement import enforcement_summary

AUDIT_PAGE_SIZE = 100


def _counts(actor: Actor) -> dict[str, int]:
    workspace = actor.visible_workspace
    counts = job_counts(workspace=workspace)
    return {"live_sandboxes": live_sessions_count(workspace=workspace), **counts}


@require_GET
@workspace_view
def overview(request: HttpRequest, actor: Actor) -> HttpResponse:
    enforcement = enforcement_summary()
    readiness = readiness_report()
    banner = {line.warning for line in enforcement.weak}  # said once, by the banner
    context = {
        "readiness": readiness,
        "warnings": [w for w in readiness["warnings"] if w["code"] not in banner],
        "enforcement": enforcement,
        "capabilities": capabilities_describe(),
        "counts": _counts(actor),
    }
    return render(request, "console/overview.html", context)


@require_GET
@workspace_view
def overview_counts(request: HttpRequest, actor: Actor) -> HttpResponse:
    """The overview's live counts, polled by its script."""
    return JsonResponse(_counts(actor))


@require_GET
@workspace_view
def catalog(request: HttpRequest, actor: Actor) -> HttpResponse:
    items = catalog_items()
    context = {"items": items, "launch_form": LaunchForm()}
    return render(request, "console/catalog.html", context)


@require_http_methods(["GET", "POST"])
@workspace_view
def members(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = InviteForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            actor.require_manager("invite members")
            invitation, _secret = invitation_create(
                actor=actor,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("console:members")
    context = {
        "members": members_of(workspace=actor.workspace),
        "invitations": invitations_pending(workspace=actor.workspace) if actor.can_manage else [],
        "form": form,
    }
    return render(request, "console/members.html", context, status=400 if form.errors else 200)


@require_GET
@manager_view("read the audit log")
def audit(request: HttpRequest, actor: Actor) -> HttpResponse:
    try:
        page = audit_page(
            workspace=actor.workspace, limit=AUDIT_PAGE_SIZE, cursor=request.GET.get("cursor", "")
        )
    except ApplicationError as exc:
        return error_page(request, exc.message, exc.http_status)
    return render(request, "console/audit.html", {"page": page})


@require_POST
@login_required
def switch_workspace(request: HttpRequest) -> HttpResponse:
    """Act in another workspace the user belongs to (any other choice is a 404)."""
    wanted = request.POST.get("workspace_id", "")
    assert isinstance(request.user, User)  # login_required
    mine = memberships_of(request.user)
    membership = next((m for m in mine if m.workspace_id == wanted), None)
    if membership is None:
        raise Http404("no such workspace")
    request.session[WORKSPACE_KEY] = membership.workspace_id
    messages.info(request, f"Now working in {membership.workspace.name}.")
    return redirect("console:overview")
