"""The SSE wire: event blocks, keepalives, ``Last-Event-ID``, and the HTTP response.

Each event is ``id: <seq>`` and one ``data: <compact single-line JSON>`` line, never an
``event:`` name (browsers' ``onmessage`` only sees unnamed events); a quiet stream
sends ``: keepalive`` comments.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from matrixcloud.errors import BadRequest

KEEPALIVE = b": keepalive\n\n"
LAST_EVENT_ID_PARAM = "last_event_id"  # for clients that cannot set headers


def keepalive_seconds() -> float:
    """The quiet interval after which a stream sends ``: keepalive`` and re-reads rows."""
    return float(settings.MATRIX_SSE_KEEPALIVE_SECONDS)


def encode_event(seq: int, event: Mapping[str, Any]) -> bytes:
    """One event block. ASCII-only JSON keeps it on one line for every line splitter
    (Python's ``splitlines`` also breaks at U+2028, U+0085 and friends)."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=True)
    return b"id: %d\ndata: %s\n\n" % (seq, data.encode("ascii"))


@dataclass(frozen=True, slots=True)
class Frame:
    """An encoded event and its place in the sequence."""

    seq: int
    body: bytes
    terminal: bool = False

    @classmethod
    def of(cls, seq: int, event: Mapping[str, Any], *, terminal: bool = False) -> Frame:
        return cls(seq, encode_event(seq, event), terminal)

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Frame:
        return cls.of(int(message["seq"]), message["event"], terminal=bool(message["terminal"]))


def last_event_id(request: HttpRequest) -> int:
    """The client's ``Last-Event-ID`` (header, else query parameter); 0 means none."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get(LAST_EVENT_ID_PARAM) or ""
    raw = raw.strip()
    if not raw:
        return 0
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("Last-Event-ID must be a non-negative integer")
    return int(raw)


def event_stream_response(chunks: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """A ``text/event-stream`` response that no proxy or browser buffers or caches.

    A plain (sync) view returns it: the web lane (``matrixcloud.lib.lanes``) runs the view
    in one of its threads, whose database connection stays with the thread, and sends
    ``chunks`` from the event loop, which cancels them when the client disconnects.
    """
    response = StreamingHttpResponse(chunks, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def no_content() -> HttpResponse:
    """The answer to a reconnect after the terminal event: browsers stop retrying."""
    return HttpResponse(status=204)


def release_connections() -> None:
    """Close this thread's database connections now, not when the stream ends (for an
    async view under Django's own handler).

    Django gives each request its own sync thread, and the connection it opened stays
    with the request: a thousand open streams would hold a thousand connections
    (PostgreSQL refuses past ``max_connections``). Streams read through their own small
    pool instead. A connection inside a transaction (the test client's) is left alone.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()
