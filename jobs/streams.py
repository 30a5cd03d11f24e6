"""A job's events as a server-sent event stream (also behind sandbox session streams).

Replays the job's event rows after the client's ``Last-Event-ID``, follows the job's
bus group (``jobs.events`` publishes each row after commit), and closes after the
terminal event, or after the job's TTL plus a grace period if none ever comes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
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


# A storm of subscribers of one job replays its rows once, not once per subscriber.
shared_reads = sse.SharedReads()


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
    job_id = job.pk

    async def read(after: int, limit: int) -> Sequence[sse.Frame]:
        since = stream.subscribed_at
        return await shared_reads.run(
            (job_id, after, limit), since, job_event_frames, job_id, after, limit
        )

    stream = sse.DurableStream(hubs, job_group(job_id), read, after=after, lifetime=lifetime)
    return sse.event_stream_response(stream.chunks())
