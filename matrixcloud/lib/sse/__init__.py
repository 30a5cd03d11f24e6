"""Server-sent event streams over a durable, sequenced event log.

The database is the truth and the bus only makes delivery fast. A
stream replays the stored events after the client's ``Last-Event-ID``, then follows
live pushes, de-duplicated and ordered by sequence number; a gap, an overflowing
subscriber or a quiet keepalive tick sends it back to the rows, so nothing is lost,
repeated or reordered. It closes after the terminal event, or at a deadline after one
last read.

Fan-out is process-local: a ``Hub`` holds one bus channel per process (per event
loop), joins a group when its first local subscriber arrives and leaves it when the
last one goes, and hands every message, encoded once, to each subscriber's bounded
buffer. Bus messages carry ``{"seq": int, "event": {...}, "terminal": bool}``; the
hub's ``route`` names the group a message belongs to.

Wire format: ``id: <seq>`` and ``data: <compact single-line JSON>`` per event, never
an ``event:`` name (browsers' ``onmessage`` only sees unnamed events), and a
``: keepalive`` comment when the stream has been quiet for the keepalive interval.

A stream's view is a plain one: the web lane runs it (authentication, the object's
checks) in a thread and sends the stream from the event loop, so an open stream holds
no thread and no database connection; concurrent identical reads of many streams
(a storm of subscribers replaying one job) share one query (``SharedReads``).

Modules: ``wire`` (framing, ``Last-Event-ID``, the response),
``hub`` (fan-out), ``stream`` (one client's durable stream).
"""

from matrixcloud.lib.sse.hub import Hub, HubRegistry, Subscription
from matrixcloud.lib.sse.stream import READ_BATCH, DurableStream, Read, SharedReads, run_read
from matrixcloud.lib.sse.wire import (
    KEEPALIVE,
    LAST_EVENT_ID_PARAM,
    Frame,
    encode_event,
    event_stream_response,
    keepalive_seconds,
    last_event_id,
    no_content,
)

__all__ = [
    "KEEPALIVE",
    "LAST_EVENT_ID_PARAM",
    "READ_BATCH",
    "DurableStream",
    "Frame",
    "Hub",
    "HubRegistry",
    "Read",
    "SharedReads",
    "Subscription",
    "encode_event",
    "event_stream_response",
    "keepalive_seconds",
    "last_event_id",
    "no_content",
    "run_read",
]
