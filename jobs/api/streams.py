"""Async URL callbacks for the jobs API's event streams (see ``matrixcloud.lib.sse``)."""

from __future__ import annotations

from jobs.api.views import JobEventsView
from matrixcloud.lib.sse import async_stream_view

# GET /v1/jobs/{job_id}/events: JobEventsView checks and documents; the stream runs async.
job_events = async_stream_view(JobEventsView)
