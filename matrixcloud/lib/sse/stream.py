"""One client's durable stream: stored events, then live ones, nothing lost or repeated.

The database is the truth and the bus only makes delivery fast: a
stream replays the stored events after the client's ``Last-Event-ID``, then follows
live pushes ordered and de-duplicated by sequence number; a gap, an overflowing
subscriber or a quiet keepalive tick sends it back to the rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection

from matrixcloud.lib.sse.hub import HubRegistry, Subscription
from matrixcloud.lib.sse.wire import KEEPALIVE, Frame, keepalive_seconds

logger = logging.getLogger(__name__)

READ_BATCH = 500  # rows per database read
READ_THREADS = 4  # threads (each with one database connection) for stream reads

P = ParamSpec("P")
T = TypeVar("T")
Read = Callable[[int, int], Awaitable[Sequence[Frame]]]


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


class SharedReads:
    """Identical reads of many streams at once, served by one query.

    A storm of subscribers of one job replays the same rows at the same moment: the first
    read of a key runs (in :func:`run_read`'s threads), and the reads of that key that
    arrive before its query begins wait for its result instead of queueing their own. A
    query that already began is not shared with a stream that subscribed after it began:
    an event committed in between and pushed before that stream listened would be in
    neither. Results are shared, so they are immutable (tuples of frozen frames).
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[asyncio.AbstractEventLoop, Hashable], _SharedRead] = {}

    async def run(
        self, key: Hashable, since: float, fn: Callable[..., Sequence[Frame]], *args: object
    ) -> tuple[Frame, ...]:
        """``fn(*args)``, or the result of the same read (``key``) that began no earlier
        than ``since`` (``time.monotonic()``: when the caller subscribed)."""
        slot = (asyncio.get_running_loop(), key)
        shared = self._pending.get(slot)
        if shared is None or (shared.began is not None and shared.began < since):
            shared = self._pending[slot] = _SharedRead(fn, args)
            shared.result = asyncio.ensure_future(run_read(shared.call))
            shared.result.add_done_callback(lambda _: self._forget(slot, shared))
        assert shared.result is not None
        return await asyncio.shield(shared.result)  # one waiter gone cancels nobody's read

    def _forget(
        self, slot: tuple[asyncio.AbstractEventLoop, Hashable], shared: _SharedRead
    ) -> None:
        if self._pending.get(slot) is shared:
            del self._pending[slot]


class _SharedRead:
    """One shared read: when its query began (in its thread), and its result."""

    def __init__(self, fn: Callable[..., Sequence[Frame]], args: tuple[object, ...]) -> None:
        self.began: float | None = None
        self.result: asyncio.Future[tuple[Frame, ...]] | None = None
        self._fn = fn
        self._args = args

    def call(self) -> tuple[Frame, ...]:
        self.began = time.monotonic()
        return tuple(self._fn(*self._args))


class DurableStream:
    """One client's stream of ``group``: stored frames after ``after``, then live ones.

    It subscribes before the first read, so nothing falls between the rows and the
    bus. ``read(after, limit)`` returns stored frames in sequence order. A pushed frame
    is sent only when it is the next in sequence (a backlog of them goes out as one
    write); anything else (a gap, a lagging subscription, a quiet keepalive tick) leads
    to ``read``. It ends after the terminal frame or, failing that, at the deadline
    after one last read, and releases the subscription however it ends (client gone
    included). Every wait is bounded by the next tick or the deadline.
    """

    def __init__(
        self,
        hubs: HubRegistry,
        group: str,
        read: Read,
        *,
        after: int,
        lifetime: float,
        keepalive: float | None = None,
    ) -> None:
        self.cursor = after
        self.finished = False
        self.subscribed_at = 0.0  # time.monotonic() once subscribed (for SharedReads)
        self.subscription: Subscription | None = None
        self._hubs = hubs
        self._group = group
        self._read = read
        self._lifetime = lifetime
        self._keepalive = keepalive
        self._ends_at = self._tick_at = 0.0
        self._expired = False
        self._loop: asyncio.AbstractEventLoop  # set when the stream starts (on the loop)

    async def chunks(self) -> AsyncIterator[bytes]:
        subscription = self.subscription = await self._hubs.current().subscribe(self._group)
        self.subscribed_at = time.monotonic()
        try:
            self._start_clock()
            async for chunk in self._catch_up():
                yield chunk
            while not self.finished:
                frame = await subscription.next(min(self._tick_at, self._ends_at))
                if frame is not None and not subscription.lagging:
                    if frame.seq == self.cursor + 1:
                        yield self._take_run(frame)
                    if frame.seq <= self.cursor + 1:
                        continue  # sent now, or already (replayed from the rows, pushed twice)
                elif frame is None and not subscription.lagging and not self._due():
                    continue  # an early timer
                async for chunk in self._after_wake(frame is None):
                    yield chunk
        finally:
            subscription.close()

    async def _after_wake(self, quiet: bool) -> AsyncIterator[bytes]:
        """A gap, a lag, a tick or the deadline: keepalive if quiet, then the rows."""
        if quiet and self._clock() >= self._tick_at - 0.001:
            self._tick_at = self._clock() + self._keepalive_seconds()
            yield KEEPALIVE
            assert self.subscription is not None
            await self.subscription.rejoin()
        self._expired = self._clock() >= self._ends_at
        async for chunk in self._catch_up():
            yield chunk

    async def _catch_up(self) -> AsyncIterator[bytes]:
        """Send the stored frames after the cursor, a read's worth per write; the rows
        cover anything buffered."""
        assert self.subscription is not None
        self.subscription.resync()
        while not self.finished:
            frames = await self._read_rows()
            bodies = [
                self._take(frame)
                for frame in frames
                if frame.seq > self.cursor and not self.finished
            ]
            if bodies:
                yield b"".join(bodies)
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
        self._tick_at = self._clock() + self._keepalive_seconds()
        return frame.body

    def _take_run(self, frame: Frame) -> bytes:
        """``frame`` and the buffered frames that follow it in sequence, as one chunk."""
        assert self.subscription is not None
        bodies = [self._take(frame)]
        while not self.finished and (following := self.subscription.pop_next(self.cursor + 1)):
            bodies.append(self._take(following))
        return bodies[0] if len(bodies) == 1 else b"".join(bodies)

    def _start_clock(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._clock()
        self._ends_at = now + self._lifetime
        self._tick_at = now + self._keepalive_seconds()

    def _due(self) -> bool:
        return self._clock() >= min(self._tick_at, self._ends_at) - 0.001

    def _keepalive_seconds(self) -> float:
        if self._keepalive is None:
            self._keepalive = keepalive_seconds()
        return self._keepalive

    def _clock(self) -> float:
        return self._loop.time()
