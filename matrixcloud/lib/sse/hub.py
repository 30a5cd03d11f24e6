"""Process-local fan-out of bus groups to the streams of this process.

A ``Hub`` holds one bus channel per process (per event loop), joins a group when its
first local subscriber arrives and leaves it when the last one goes, and hands every
message, encoded once, to each subscriber's bounded buffer. Bus messages carry
``{"seq": int, "event": {...}, "terminal": bool}``; the hub's ``route`` names the group
a message belongs to.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import redis.exceptions
from channels.layers import BaseChannelLayer, get_channel_layer

from matrixcloud.lib.sse.wire import Frame

logger = logging.getLogger(__name__)

SUBSCRIBER_CAPACITY = 1024  # buffered frames per subscriber before it re-reads the rows
FANOUT_SLICE = 32  # subscribers woken per event-loop pass
BUS_TIMEOUT = 5.0  # seconds for one group add/discard
MAX_BACKOFF = 2.0  # seconds between attempts while the bus is down

Route = Callable[[Mapping[str, Any]], str]


class Subscription:
    """One stream's view of a group: a bounded buffer of pushed frames and a lag flag.

    A full buffer never blocks the hub and never grows: the subscription is marked
    lagging, and its stream re-reads the rows. Waiting costs no timer per frame: one
    timer per subscription is moved only when a wait must end sooner than it fires.
    """

    def __init__(self, hub: Hub, group: str, capacity: int) -> None:
        self.hub = hub
        self.group = group
        self.lagging = False
        self._capacity = capacity
        self._frames: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, frame: Frame) -> None:
        if self.lagging:
            return
        if len(self._frames) >= self._capacity:
            self.mark_lagging()
            return
        self._frames.append(frame)
        self._wake()

    def mark_lagging(self) -> None:
        """Send the stream back to the rows (which hold every dropped frame)."""
        self.lagging = True
        self._frames.clear()
        self._wake()

    async def next(self, deadline: float) -> Frame | None:
        """The next pushed frame; None when woken without one (lagging, or a timer:
        the caller checks its clock). ``deadline`` is in event-loop time."""
        if self._frames:
            return self._frames.popleft()
        if self.lagging:
            return None
        loop = asyncio.get_running_loop()
        self._arm(loop, deadline)
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        return self._frames.popleft() if self._frames else None

    def pop_next(self, seq: int) -> Frame | None:
        """The buffered frame ``seq`` if it is next in the buffer (to batch a backlog)."""
        if self._frames and self._frames[0].seq == seq:
            return self._frames.popleft()
        return None

    def resync(self) -> None:
        """Forget buffered frames before a read of the rows (which covers all of them)."""
        self.lagging = False
        self._frames.clear()

    async def rejoin(self) -> None:
        await self.hub.ensure_joined(self.group)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.hub.release(self)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return  # fires in time (perhaps early: the caller just waits again)
            self._timer.cancel()
        self._timer = loop.call_at(deadline, self._ring)

    def _ring(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


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
            first = group not in self._groups
            self._groups.setdefault(group, set()).add(subscription)
            try:
                if first:
                    await self._join(group)
            except BaseException:  # cancelled (client gone): leave nothing behind
                self.release(subscription)
                raise
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
            await self._dispatch(message)

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

    async def _dispatch(self, message: Mapping[str, Any]) -> None:
        """Hand the frame (encoded once) to the group's subscribers, a slice at a time.

        Between slices the loop runs, so the first slice's streams write (the server
        sends on the next loop pass) and clients start reading while later slices are
        still being served, instead of every stream's bytes leaving at the very end.
        """
        try:
            members = self._groups.get(self._route(message))
            frame = Frame.from_message(message) if members else None
        except (KeyError, TypeError, ValueError):
            logger.warning("ignored a malformed stream message: %.200r", message)
            return
        if frame is None or not members:
            return
        for index, subscription in enumerate(list(members), start=1):
            subscription.offer(frame)
            if index % FANOUT_SLICE == 0:
                await asyncio.sleep(0)


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
