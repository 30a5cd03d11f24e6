"""Bus sends from synchronous code, on one event loop per process.

``async_to_sync(layer.send)`` from a thread with no event loop above it (a web lane's
thread, a worker's task, a management command) makes a new event loop for the call,
and channels-redis a new connection pool for that loop: about 3 ms per send on
loopback, three of them in ``POST /v1/jobs``. :func:`bus_run` runs such a send on a
loop this process keeps in a thread of its own, whose pool stays connected (about
0.2 ms). Code that ``sync_to_async`` entered from an event loop (the sandbox host)
keeps sending on that loop, as ``async_to_sync`` does.

The loop is made on first use and again after a fork (a loop's thread does not
survive the fork). Each send is bounded by a
timeout, and the loop runs at most :data:`MAX_IN_FLIGHT` sends at once, so a slow bus
cannot pile up connections.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from asgiref.sync import SyncToAsync, async_to_sync

T = TypeVar("T")

SEND_TIMEOUT = 5.0
MAX_IN_FLIGHT = 8

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_gate: asyncio.Semaphore | None = None
_owner = 0  # the pid that made the loop


def bus_run(
    make: Callable[[], Awaitable[T]], timeout: float = SEND_TIMEOUT, *, gated: bool = True
) -> T:
    """Run the coroutine ``make()`` returns and return its result, from sync code.

    Raises what the coroutine raises, or :class:`TimeoutError` past ``timeout`` s (the
    send is then cancelled). ``gated=False`` is for a wait that may be long (a tool
    call's reply): it does not count against :data:`MAX_IN_FLIGHT`. Called in a thread
    that already runs an event loop, it raises as ``async_to_sync`` does.
    """

    async def call() -> T:
        return await make()

    if _parent_loop() is not None or _running_here():
        return async_to_sync(call)()
    loop, gate = _bus_loop()

    async def bounded() -> T:
        async with gate:
            return await call()

    future = asyncio.run_coroutine_threadsafe(bounded() if gated else call(), loop)
    try:
        return future.result(timeout)
    except FutureTimeout:
        future.cancel()
        raise TimeoutError(f"the bus did not take the message within {timeout:g} s") from None


def _parent_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop that ``sync_to_async`` entered this thread from, if any."""
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop: asyncio.AbstractEventLoop | None = getattr(local, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def _running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _bus_loop() -> tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]:
    global _loop, _gate, _owner
    with _lock:
        if _loop is None or _gate is None or _owner != os.getpid():
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            gates: list[asyncio.Semaphore] = []

            def run() -> None:
                asyncio.set_event_loop(loop)
                gates.append(asyncio.Semaphore(MAX_IN_FLIGHT))
                ready.set()
                loop.run_forever()

            threading.Thread(target=run, name="bus-loop", daemon=True).start()
            if not ready.wait(SEND_TIMEOUT):
                raise TimeoutError("the bus loop did not start")
            _loop, _gate, _owner = loop, gates[0], os.getpid()
        return _loop, _gate
