"""Server-sent event streams over a durable, sequenced event log.

The database is the truth and the bus only makes delivery fast (ARCHITECTURE.md). A
stream replays the stored events after the client's ``Last-Event-ID``, then follows
live pushes, de-duplicated and ordered by sequence number; a gap, an overflowing
subscriber or a quiet keepalive tick sends it back to the rows, so nothing is lost,
repeated or reordered. It closes after the terminal event, or at a deadline after one
last read.

Fan-out is process-local: a ``Hub`` holds one bus channel per process (per event
loop), joins a group when its first local subscriber arrives and leaves it when the
last one goes, and hands every message, encoded once, to each subscriber's bounded
queue. Bus messages carry ``{"seq": int, "event": {...}, "terminal": bool}``; the
hub's ``route`` names the group a message belongs to.

Wire format: ``id: <seq>`` and ``data: <compact single-line JSON>`` per event, never
an ``event:`` name (browsers' ``onmessage`` only sees unnamed events), and a
``: keepalive`` comment when the stream has been quiet for the keepalive interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import redis.exceptions
from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from rest_framework.views import APIView

from matrixcloud.errors import BadRequest

logger = logging.getLogger(__name__)

KEEPALIVE = b": keepalive\n\n"
READ_BATCH = 500  # rows per database read
SUBSCRIBER_CAPACITY = 1024  # queued frames per subscriber before it re-reads the rows
READ_THREADS = 4  # threads (each with one database connection) for stream reads
BUS_TIMEOUT = 5.0  # seconds for one group add/discard
MAX_BACKOFF = 2.0  # seconds between attempts while the bus is down
LAST_EVENT_ID_PARAM = "last_event_id"  # for clients that cannot set headers

P = ParamSpec("P")
T = TypeVar("T")
Route = Callable[[Mapping[str, Any]], str]


def keepalive_seconds() -> float:
    """The quiet interval after which a stream sends ``: keepalive`` and re-reads rows."""
    return float(settings.MATRIX_SSE_KEEPALIVE_SECONDS)


# --- Framing -------------------------------------------------------------------------
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


WAKE = Frame(0, b"")  # queued to wake a waiting stream; never sent


# --- HTTP ------------------------------------------------------------------------------
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
    """A ``text/event-stream`` response that no proxy or browser buffers or caches."""
    response = StreamingHttpResponse(chunks, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def no_content() -> HttpResponse:
    """The answer to a reconnect after the terminal event: browsers stop retrying."""
    return HttpResponse(status=204)


def async_stream_view(
    view_class: type[APIView],
) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
    """An async URL callback for a DRF view whose GET returns an event stream.

    The DRF view authenticates, checks the object and builds the response in Django's
    sync thread (errors are JSON in the error shape); the stream then runs on the event
    loop, where a client disconnect cancels it. ``cls`` and ``initkwargs`` let
    drf-spectacular document ``view_class`` as usual.
    """
    drf_view = view_class.as_view()

    async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response: HttpResponseBase = await sync_to_async(drf_view)(request, *args, **kwargs)
        return response

    view.__dict__.update(cls=view_class, initkwargs={}, csrf_exempt=True)
    view.__name__ = view.__qualname__ = view_class.__name__
    view.__doc__ = view_class.__doc__
    return view


# --- Database reads off the event loop -----------------------------------------------
_read_pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="sse-read")


async def run_read(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a read-only ORM call in the streams' own threads.

    Each thread keeps its database connection between reads; one that fails is closed
    so the next read reconnects (a restarted database heals by itself).
    """

    def guarded() -> T:
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connection.close()
            raise

    return await sync_to_async(guarded, thread_sensitive=False, executor=_read_pool)()


# --- Fan-out ---------------------------------------------------------------------------
class Subscription:
    """One stream's view of a group: a bounded queue of frames and a lag flag.

    A full queue never blocks the hub and never grows: the subscription is marked
    lagging, and its stream forgets the queue and re-reads the rows.
    """

    def __init__(self, hub: Hub, group: str, capacity: int) -> None:
        self.hub = hub
        self.group = group
        self.lagging = False
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=capacity)

    def offer(self, frame: Frame) -> None:
        if self.lagging:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.mark_lagging()

    def mark_lagging(self) -> None:
        """Send the stream back to the rows as soon as it looks (waking it if it waits)."""
        if not self.lagging:
            self.lagging = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(WAKE)

    async def next(self, timeout: float) -> Frame | None:
        """The next pushed frame, or None after ``timeout`` seconds."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None

    def resync(self) -> None:
        """Forget queued frames before a read of the rows (which covers all of them)."""
        self.lagging = False
        while not self._queue.empty():
            self._queue.get_nowait()

    async def rejoin(self) -> None:
        await self.hub.ensure_joined(self.group)

    def close(self) -> None:
        self.hub.release(self)


class Hub:
    """This event loop's bus channel, fanned out to its subscribers by group."""

    def __init__(self, route: Route, *, capacity: int) -> None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("event streams need a channel layer (CHANNEL_LAYERS)")
        self._layer: BaseChannelLayer = layer
        self._route = route
        self._capacity = capacity
        self._channel = ""
        self._groups: dict[str, set[Subscription]] = {}
        self._unjoined: set[str] = set()
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def subscribe(self, group: str) -> Subscription:
        """A subscription that receives every message of ``group`` pushed from now on."""
        subscription = Subscription(self, group, self._capacity)
        async with self._lock:
            if group not in self._groups:
                self._groups[group] = set()
                await self._join(group)
            self._groups[group].add(subscription)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_bus(), name="sse-hub")
        return subscription

    def release(self, subscription: Subscription) -> None:
        members = self._groups.get(subscription.group)
        if members is None or subscription not in members:
            return
        members.discard(subscription)
        if not members:
            task = asyncio.get_running_loop().create_task(self._leave(subscription.group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def ensure_joined(self, group: str) -> None:
        """Retry joining a group the bus refused earlier (the stream polled meanwhile)."""
        if group not in self._unjoined:
            return
        async with self._lock:
            if group in self._groups and group in self._unjoined:
                await self._join(group)

    def subscriber_count(self, group: str) -> int:
        return len(self._groups.get(group, ()))

    async def _channel_name(self) -> str:
        if not self._channel:
            self._channel = await self._layer.new_channel()
        return self._channel

    async def _join(self, group: str) -> None:
        try:
            async with asyncio.timeout(BUS_TIMEOUT):
                await self._layer.group_add(group, await self._channel_name())
        except Exception:  # the bus is down: streams poll the rows at each keepalive tick
            logger.warning("could not join %s on the bus", group, exc_info=True)
            self._unjoined.add(group)
        else:
            self._unjoined.discard(group)

    async def _leave(self, group: str) -> None:
        async with self._lock:
            if self._groups.get(group):
                return  # someone subscribed again meanwhile
            self._groups.pop(group, None)
            self._unjoined.discard(group)
            if not self._groups and self._reader is not None:
                self._reader.cancel()
                self._reader = None
            try:
                async with asyncio.timeout(BUS_TIMEOUT):
                    await self._layer.group_discard(group, self._channel)
            except Exception:  # the membership expires on the bus by itself
                logger.warning("could not leave %s on the bus", group, exc_info=True)

    async def _read_bus(self) -> None:
        failures = 0
        while self._groups:
            try:
                message = await self._layer.receive(await self._channel_name())
            except (TimeoutError, redis.exceptions.TimeoutError):
                # An idle blocking pop outlived the client's socket timeout (redis-py's
                # default equals channels-redis's pop timeout). A message popped at that
                # instant is lost to the bus, not to streams: their next tick re-reads.
                logger.debug("bus receive timed out; receiving again", exc_info=True)
                continue
            except Exception:
                failures += 1
                await self._recover(failures)
                continue
            failures = 0
            self._dispatch(message)

    async def _recover(self, failures: int) -> None:
        """After a bus error: rejoin the groups, then every subscriber re-reads the rows
        (which hold whatever the bus lost meanwhile)."""
        logger.warning("bus receive failed; streams fall back to the database", exc_info=True)
        await asyncio.sleep(min(MAX_BACKOFF, 0.05 * 2**failures))
        async with self._lock:
            for group in list(self._groups):
                await self._join(group)
        for members in self._groups.values():
            for subscription in members:
                subscription.mark_lagging()

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        try:
            members = self._groups.get(self._route(message))
            frame = Frame.from_message(message) if members else None
        except (KeyError, TypeError, ValueError):
            logger.warning("ignored a malformed stream message: %.200r", message)
            return
        if frame is not None and members:
            for subscription in members:
                subscription.offer(frame)


class HubRegistry:
    """One hub per event loop: daphne runs one loop; tests may run several in turn."""

    def __init__(self, route: Route, *, capacity: int = SUBSCRIBER_CAPACITY) -> None:
        self._route = route
        self._capacity = capacity
        self._hubs: dict[asyncio.AbstractEventLoop, Hub] = {}

    def current(self) -> Hub:
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            self._hubs = {key: value for key, value in self._hubs.items() if not key.is_closed()}
            hub = self._hubs[loop] = Hub(self._route, capacity=self._capacity)
        return hub


# --- The stream ------------------------------------------------------------------------
Read = Callable[[int, int], Awaitable[Sequence[Frame]]]


class DurableStream:
    """One subscriber's stream: stored frames after ``after``, then live ones, until the end.

    ``read(after, limit)`` returns stored frames in sequence order. A pushed frame is
    sent only when it is the next in sequence; anything else (a gap, a lagging
    subscription, a quiet tick) leads to ``read``. Every wait is bounded by the next
    keepalive tick or the deadline.
    """

    def __init__(
        self,
        subscription: Subscription,
        read: Read,
        *,
        after: int,
        lifetime: float,
        keepalive: float,
    ) -> None:
        self.cursor = after
        self.finished = False
        self._sub = subscription
        self._read = read
        self._lifetime = lifetime
        self._keepalive = keepalive
        self._ends_at = self._tick_at = 0.0
        self._expired = False

    async def chunks(self) -> AsyncIterator[bytes]:
        now = self._clock()
        self._ends_at = now + self._lifetime
        self._tick_at = now + self._keepalive
        async for chunk in self._catch_up():
            yield chunk
        while not self.finished:
            frame = await self._sub.next(timeout=min(self._tick_at, self._ends_at) - self._clock())
            if frame is not None and not self._sub.lagging:
                if frame.seq <= self.cursor:
                    continue  # already sent: replayed from the rows, or pushed twice
                if frame.seq == self.cursor + 1:
                    yield self._take(frame)
                    continue
            if frame is None and self._clock() >= self._tick_at - 0.001:
                yield self._tick()
                await self._sub.rejoin()
            self._expired = self._clock() >= self._ends_at
            async for chunk in self._catch_up():
                yield chunk

    async def _catch_up(self) -> AsyncIterator[bytes]:
        """Send the stored frames after the cursor; the rows cover anything queued."""
        self._sub.resync()
        while not self.finished:
            frames = await self._read_rows()
            for frame in frames:
                if frame.seq > self.cursor and not self.finished:
                    yield self._take(frame)
            if len(frames) < READ_BATCH:
                break
        if self._expired:
            self.finished = True

    async def _read_rows(self) -> Sequence[Frame]:
        try:
            return await self._read(self.cursor, READ_BATCH)
        except Exception:  # the next tick reads again; order is kept meanwhile
            logger.warning("stream read after #%s failed", self.cursor, exc_info=True)
            return ()

    def _take(self, frame: Frame) -> bytes:
        self.cursor = frame.seq
        self.finished = frame.terminal
        self._tick_at = self._clock() + self._keepalive
        return frame.body

    def _tick(self) -> bytes:
        self._tick_at = self._clock() + self._keepalive
        return KEEPALIVE

    @staticmethod
    def _clock() -> float:
        return asyncio.get_running_loop().time()


async def follow(
    hubs: HubRegistry,
    group: str,
    read: Read,
    *,
    after: int,
    lifetime: float,
    keepalive: float | None = None,
) -> AsyncIterator[bytes]:
    """The event stream of ``group`` for a client that has seen up to ``after``.

    Subscribes before the first read, so nothing falls between the rows and the bus;
    releases the subscription however the stream ends (client gone included).
    """
    subscription = await hubs.current().subscribe(group)
    try:
        stream = DurableStream(
            subscription,
            read,
            after=after,
            lifetime=lifetime,
            keepalive=keepalive if keepalive is not None else keepalive_seconds(),
        )
        async for chunk in stream.chunks():
            yield chunk
    finally:
        subscription.close()
