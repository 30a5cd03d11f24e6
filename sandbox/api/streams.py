"""Async URL callbacks for the sandbox API's event streams (see ``matrixcloud.lib.sse``)."""

from __future__ import annotations

from matrixcloud.lib.sse import async_stream_view
from sandbox.api.views import SandboxEventsView

# GET /v1/sandbox/sessions/{id}/events: the backing job's stream, checked by the view.
sandbox_events = async_stream_view(SandboxEventsView)
