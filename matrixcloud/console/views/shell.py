"""MatrixShell: its status, installing it (a job with live pip output) and a terminal.

Off unless the installation enables it (the services' gate: a 403 page). The terminal's
form runs one command through ``matrixshell_exec``; its script sends the same command to
``/v1/matrixshell/exec`` and appends the output without leaving the page.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.principals import Actor
from matrixcloud.console.access import workspace_view
from matrixcloud.console.forms import ShellForm
from matrixcloud.errors import ApplicationError
from matrixcloud.lib.lanes import client_gone
from sandbox.matrixshell.services import (
    matrixshell_exec,
    matrixshell_gate,
    matrixshell_install,
    matrixshell_status,
)


@require_http_methods(["GET", "POST"])
@workspace_view
def shell(request: HttpRequest, actor: Actor) -> HttpResponse:
    matrixshell_gate()
    form = ShellForm(request.POST if request.method == "POST" else None)
    result: dict[str, Any] | None = None
    if request.method == "POST" and form.is_valid():
        try:
            result = matrixshell_exec(
                command=form.cleaned_data["command"],
                actor=actor,
                client_gone=client_gone(request),  # a closed tab stops the command
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
    context = {
        "status": matrixshell_status(workspace=actor.workspace),
        "form": form,
        "result": result,
    }
    return render(request, "console/shell.html", context, status=400 if form.errors else 200)


@require_POST
@workspace_view
def shell_install(request: HttpRequest, actor: Actor) -> HttpResponse:
    matrixshell_gate()
    job = matrixshell_install(actor=actor)
    return redirect("console:job", job_id=job.pk)
