"""Jobs: the list (type and status filters, cursor paging) and a job's page with its
events and progress, live from ``/v1/jobs/<id>/events``; cancel."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.principals import Actor
from jobs.api.views import CANCEL_WAIT_SECONDS
from jobs.registry import registered_types
from jobs.selectors import job_get, job_list
from jobs.services import job_await_terminal, job_cancel
from matrixcloud.console.access import workspace_view
from matrixcloud.console.forms import JobFilterForm
from matrixcloud.console.selectors import job_events
from matrixcloud.errors import ApplicationError

PAGE = 50


@require_GET
@workspace_view
def job_list_view(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = JobFilterForm(request.GET)
    page, error = None, ""
    if form.is_valid():
        try:
            page = job_list(
                workspace=actor.visible_workspace,
                limit=PAGE,
                cursor=form.cleaned_data["cursor"],
                job_type=form.cleaned_data["type"],
                status=form.cleaned_data["status"],
            )
        except ApplicationError as exc:
            error = exc.message
    context = {"form": form, "page": page, "error": error, "types": registered_types()}
    return render(request, "console/jobs.html", context, status=400 if page is None else 200)


@require_GET
@workspace_view
def job_detail(request: HttpRequest, actor: Actor, job_id: str) -> HttpResponse:
    job = job_get(job_id=job_id, workspace=actor.visible_workspace)
    context = {
        "job": job,
        "events": job_events(job),
        "events_url": f"/v1/jobs/{job.pk}/events",
        "result_json": json.dumps(job.result, indent=2) if job.result is not None else "",
    }
    return render(request, "console/job.html", context)


@require_POST
@workspace_view
def job_cancel_view(request: HttpRequest, actor: Actor, job_id: str) -> HttpResponse:
    job = job_get(job_id=job_id, workspace=actor.visible_workspace)
    status = job_cancel(job=job, actor=actor)
    status = job_await_terminal(job.pk, status, timeout=CANCEL_WAIT_SECONDS)
    messages.info(request, f"Job {job.pk}: {status}.")
    return redirect("console:job", job_id=job.pk)
