"""Sandboxes: the list, starting one (from the catalog or a command), a session's page,
a tool call without JavaScript, and stop.

The session page renders what is known now (events so far, tools once ready); its
script follows the API's event stream (``/v1/sandbox/sessions/<id>/events``, signed in
by the same cookie) and calls tools through ``/v1/sandbox/sessions/<id>/tools/call``.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.principals import Actor
from jobs.api.views import CANCEL_WAIT_SECONDS
from jobs.services import job_await_terminal
from matrixcloud.console.access import workspace_view
from matrixcloud.console.forms import LaunchForm, SandboxForm, ToolCallForm
from matrixcloud.console.selectors import catalog_item, job_events, sessions_recent
from matrixcloud.errors import ApplicationError, UnprocessableEntity
from sandbox.enforcement import enforcement_summary
from sandbox.models import SandboxSession
from sandbox.selectors import events_url, session_get
from sandbox.services import sandbox_create, sandbox_stop, sandbox_tool_call


def _start(request: HttpRequest, actor: Actor, **launch: object) -> SandboxSession:
    return sandbox_create(
        actor=actor,
        **launch,  # type: ignore[arg-type]
    )


@require_http_methods(["GET", "POST"])
@workspace_view
def sandbox_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    initial = {"start_command": request.GET.get("command", "")}
    form = SandboxForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            session = _start(
                request,
                actor,
                start_command=data["start_command"],
                env=data["env"],
                ttl_seconds=data["ttl_seconds"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("console:sandbox", session_id=session.pk)
    context = {"sessions": sessions_recent(workspace=actor.visible_workspace), "form": form}
    return render(request, "console/sandboxes.html", context, status=400 if form.errors else 200)


@require_POST
@workspace_view
def sandbox_launch(request: HttpRequest, actor: Actor) -> HttpResponse:
    """Start a catalog entry's MCP server in a sandbox."""
    form = LaunchForm(request.POST)
    item = catalog_item(form.cleaned_data["item_id"]) if form.is_valid() else None
    try:
        if item is None or not item.get("sandbox") or not item.get("start_command"):
            raise UnprocessableEntity("this catalog entry cannot run in a sandbox")
        session = _start(
            request,
            actor,
            start_command=item.get("launch_command") or item["start_command"],
            env=None,
            ttl_seconds=None,
            transport=item.get("transport", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("console:catalog")
    return redirect("console:sandbox", session_id=session.pk)


def _session_page(
    request: HttpRequest, session: SandboxSession, call: ToolCallForm | None = None, **extra: object
) -> HttpResponse:
    context = {
        "session": session,
        "job": session.job,
        "events": job_events(session.job),
        "events_url": events_url(session),
        "tools": session.tools if session.ready and not session.job.is_terminal else [],
        "call_form": call,
        "enforcement": enforcement_summary(),
        **extra,
    }
    status = 400 if call is not None and call.errors else 200
    return render(request, "console/sandbox.html", context, status=status)


@require_GET
@workspace_view
def sandbox_detail(request: HttpRequest, actor: Actor, session_id: str) -> HttpResponse:
    session = session_get(session_id=session_id, workspace=actor.visible_workspace)
    return _session_page(request, session)


@require_POST
@workspace_view
def sandbox_call(request: HttpRequest, actor: Actor, session_id: str) -> HttpResponse:
    """A tool call from the page's plain form (the script calls the API instead)."""
    session = session_get(session_id=session_id, workspace=actor.visible_workspace)
    form = ToolCallForm(request.POST)
    if not form.is_valid():
        return _session_page(request, session, form)
    try:
        result = sandbox_tool_call(
            session=session,
            name=form.cleaned_data["name"],
            arguments=form.cleaned_data["arguments"],
            actor=actor,
        )
    except ApplicationError as exc:
        form.add_error(None, exc.message)
        return _session_page(request, session, form)
    return _session_page(request, session, form, result=result, called=form.cleaned_data["name"])


@require_POST
@workspace_view
def sandbox_stop_view(request: HttpRequest, actor: Actor, session_id: str) -> HttpResponse:
    session = session_get(session_id=session_id, workspace=actor.visible_workspace)
    status = sandbox_stop(session=session, actor=actor)
    status = job_await_terminal(session.job_id, status, timeout=CANCEL_WAIT_SECONDS)
    messages.info(request, f"Sandbox stopped ({status}).")
    return redirect("console:sandbox", session_id=session.pk)
