"""Requests waiting for their answer, each with a timer that progress can push back.

A request expires after ``idle`` seconds without an answer; every
``notifications/progress`` for its token restarts that clock, but never past ``cap``
(an absolute loop time). Expiry fails the request's future with :class:`McpTimeout`;
the waiting coroutine then sends the cancellation.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import McpError, McpRemoteError, McpTimeout


@dataclass(eq=False, slots=True)
class PendingRequest:
    """One request in flight: its future, its timer and the size of its answer."""

    id: int
    method: str
    future: asyncio.Future[Any]
    idle: float
    started: float
    cap: float
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    size: int = 0
    capped: bool = False  # whether the armed deadline is the cap (not the idle clock)


class PendingTable:
    """The requests of one connection, by id. Ids are integers from 1 up."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ids = itertools.count(1)
        self._by_id: dict[int, PendingRequest] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def next_id(self) -> int:
        """A fresh id (also for requests whose answer nobody waits for)."""
        return next(self._ids)

    def open(self, method: str, *, idle: float, cap: float | None = None) -> PendingRequest:
        """Register a request that expires after ``idle`` s (progress resets) or at ``cap``."""
        now = self.loop.time()
        request = PendingRequest(
            id=self.next_id(),
            method=method,
            future=self.loop.create_future(),
            idle=idle,
            started=now,
            cap=now + idle if cap is None else cap,
        )
        self._by_id[request.id] = request
        self._arm(request, now)
        return request

    def get(self, request_id: Any) -> PendingRequest | None:
        """The open request with this id (a JSON integer), if any."""
        if type(request_id) is not int:  # bool is an int subclass; ids are plain ints
            return None
        return self._by_id.get(request_id)

    def progress(self, token: Any) -> None:
        """A progress notification for ``token`` (the request id): restart its clock."""
        request = self.get(token)
        if request is not None and not request.future.done():
            self._arm(request)

    def resolve(self, message: dict[str, Any], size: int) -> None:
        """Settle the request a response answers; late or unknown answers are dropped."""
        request = self.get(message.get("id"))
        if request is None or request.future.done():
            return
        request.size = size
        if "error" in message:
            request.future.set_exception(remote_error(request.method, message["error"]))
        else:
            request.future.set_result(message.get("result"))

    def fail(self, request: PendingRequest, exc: McpError) -> None:
        """Fail one request (if still open)."""
        if not request.future.done():
            request.future.set_exception(exc)

    def fail_all(self, make_error: Callable[[str], McpError]) -> None:
        """Fail every open request with ``make_error(method)``."""
        for request in list(self._by_id.values()):
            self.fail(request, make_error(request.method))

    def drop(self, request: PendingRequest) -> None:
        """Forget a request: its timer stops and a late answer is ignored."""
        if request.timer is not None:
            request.timer.cancel()
        self._by_id.pop(request.id, None)
        if request.future.done() and not request.future.cancelled():
            request.future.exception()  # mark retrieved: nobody else will read it

    def _arm(self, request: PendingRequest, now: float | None = None) -> None:
        if request.timer is not None:
            request.timer.cancel()
        idle_at = self.loop.time() if now is None else now
        idle_at += request.idle
        request.capped = request.cap < idle_at
        request.timer = self.loop.call_at(min(idle_at, request.cap), self._expire, request)

    def _expire(self, request: PendingRequest) -> None:
        if request.future.done():
            return
        if request.capped:
            error = McpTimeout(request.method, request.cap - request.started, hard_cap=True)
        else:
            error = McpTimeout(request.method, request.idle)
        request.future.set_exception(error)


def remote_error(method: str, error: Any) -> McpRemoteError:
    """An :class:`McpRemoteError` from a JSON-RPC error object, however malformed."""
    if not isinstance(error, dict):
        return McpRemoteError(method, 0, repr(error)[:200])
    code = error.get("code")
    message = error.get("message")
    return McpRemoteError(
        method,
        code if type(code) is int else 0,
        message if isinstance(message, str) else "(no message)",
        error.get("data"),
    )
