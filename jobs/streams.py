"""A job's events as a server-sent event stream (also behind sandbox session streams).

Replays the job's event rows after the client's ``Last-Event-ID``, follows the job's
bus group (``jobs.events`` publishes each row after commit), and closes after the
terminal event, or after the job's TTL plus a grace period if none ever comes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from django.http.response import HttpResponseBase
from django.utils import timezone

from jobs.events import job_group
from jobs.models import Job, JobEvent
from matrixcloud.lib import sse

# A job whose runner died ends by the janitor's hand; a stream waits this long past the
# TTL for that terminal event before it closes (the client may reconnect and resume).
STREAM_GRACE = timedelta(seconds=60)


def _route(message: Mapping[str, Any]) -> str:
    return job_group(str(message["job_id"]))


hubs = sse.HubRegistry(_route)


def job_event_frames(job_id: str, after: int, limit: int) -> list[sse.Frame]:
    """Up to ``limit`` stored events of the job after sequence number ``after``, in order."""
    rows = JobEvent.objects.filter(job_id=job_id, seq__gt=after).order_by("seq")[:limit]
    return [sse.Frame.of(row.seq, row.as_wire(), terminal=row.terminal) for row in rows]


def job_terminal_seq(job_id: str) -> int | None:
    return (
        JobEvent.objects.filter(job_id=job_id, terminal=True).values_list("seq", flat=True).first()
    )


async def _read(job_id: str, after: int, limit: int) -> list[sse.Frame]:
    return await sse.run_read(job_event_frames, job_id, after, limit)


def job_stream_response(job: Job, *, after: int) -> HttpResponseBase:
    """The stream of ``job``'s events after ``after`` (0: all of them).

    204 when the client already has the terminal event, so a browser stops
    reconnecting. Call it from sync code (it reads the database); the stream itself
    runs when the server iterates it.
    """
    if after:
        terminal = job_terminal_seq(job.pk)
        if terminal is not None and after >= terminal:
            return sse.no_content()
    # A job timed by progress may live until its hard cap; the stream ends with the job.
    lifetime = ((job.deadline_at or job.expires_at) + STREAM_GRACE - timezone.now()).total_seconds()
    stream = sse.DurableStream(
        hubs, job_group(job.pk), partial(_read, job.pk), after=after, lifetime=lifetime
    )
    return sse.event_stream_response(stream.chunks())
