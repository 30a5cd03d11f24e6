"""Content negotiation for streaming endpoints.

An SSE client sends ``Accept: text/event-stream``. The stream itself is a streaming
response that bypasses renderers, but errors found before it starts (401, 404, 405)
are rendered: they must still be JSON in the error shape, not a 406.
"""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class EventStreamNegotiation(DefaultContentNegotiation):
    """Ignore ``Accept``: render with the first renderer (JSON) whatever the client asks."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type
