"""The console's activity stream: what keeps its lists fresh while a page is open.

``GET /console/activity`` is a server-sent event stream (the signed-in session's
workspace only) of that workspace's list versions, sent at the start and whenever a
write's notice or a quiet tick finds them changed (``matrixcloud.lib.sse.activity``).
The page's script re-reads a list when its topic's version moved; nothing polls.
A version is an aggregate that any change to what a list shows moves: for jobs (and the
sandbox sessions they back) the count of jobs and the sum of their event sequences; for
runtimes a digest of each runtime's state and token and of the active join tokens.
"""

from __future__ import annotations

import hashlib
from functools import partial

from asgiref.sync import sync_to_async
from django.db.models import Count, Sum
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET

from accounts.models import Workspace
from accounts.principals import Actor
from jobs.models import Job
from matrixcloud.console.access import workspace_view
from matrixcloud.lib import sse
from matrixcloud.lib.sse.activity import ActivityStream
from matrixcloud.lib.sse.wire import release_connections
from runtimes.selectors import join_tokens_list, runtimes_list

LIFETIME = 600.0  # seconds; then the browser reconnects (and is sent the versions again)


def jobs_version(workspace: Workspace) -> str:
    totals = Job.objects.for_workspace(workspace).aggregate(n=Count("pk"), seqs=Sum("last_seq"))
    return f"{totals['n']}:{totals['seqs'] or 0}"


def runtimes_version(workspace: Workspace) -> str:
    runtimes = [
        (rt.pk, rt.name, rt.effective_status(), rt.token_revoked, rt.token_rotated_at)
        for rt in runtimes_list(workspace=workspace)
    ]
    tokens = [(t.pk, t.uses) for t in join_tokens_list(workspace=workspace)]
    return hashlib.sha256(repr((runtimes, tokens)).encode()).hexdigest()[:16]


def activity_versions(workspace: Workspace) -> dict[str, str]:
    """Each topic's version now (see the module docstring)."""
    return {"jobs": jobs_version(workspace), "runtimes": runtimes_version(workspace)}


async def _read_versions(workspace: Workspace) -> dict[str, str]:
    return await sse.run_read(activity_versions, workspace)


@require_GET
@workspace_view
def _open(request: HttpRequest, actor: Actor) -> HttpResponseBase:
    workspace = actor.workspace
    stream = ActivityStream(workspace.pk, partial(_read_versions, workspace), lifetime=LIFETIME)
    return sse.event_stream_response(stream.chunks())


def _open_released(request: HttpRequest) -> HttpResponseBase:
    try:
        return _open(request)
    finally:
        release_connections()  # the stream reads through its own pool


async def activity(request: HttpRequest) -> HttpResponseBase:
    """Checked in a sync thread (session, workspace), streamed on the event loop, where a
    client that goes away cancels it."""
    response: HttpResponseBase = await sync_to_async(_open_released)(request)
    return response
