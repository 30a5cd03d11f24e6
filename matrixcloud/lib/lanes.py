"""The web process's ASGI handler: sync views served in one hop, their streams on the loop.

Django's own ASGI handler runs a sync view through the async middleware chain, where
every ``MiddlewareMixin`` middleware hops to a thread and back twice, and gives each
request a new thread (so a new database connection, which it then closes). For an API
request that costs several milliseconds of pure overhead. This handler keeps Django's
path for async views and serves every other request the way a WSGI server would: the
request's signals, the sync middleware chain, the view and the response's close run in a
fixed pool of threads that keep their database connections
(``MATRIX_RUNTIME_WEB_CONN_MAX_AGE``). A streaming response's async iterator (an SSE
stream) is then sent from the event loop, holding no thread and no connection, and is
cancelled when its client disconnects. A connection is checked for health (a ``SELECT
1`` on PostgreSQL) at a request's first query unless a query of it succeeded in the last
:data:`TRUSTED_FOR` seconds: under load that round trip would be paid by every request,
and it proves nothing a second-old success does not.

A view may return a :class:`DeferredResponse` when the request says it can take one
(``request.META[DEFERRABLE]``): its status and body are completed on the event loop after
the middleware chain ran, so a long wait (a tool call's reply) holds no thread. Under
the test client and any other handler the view answers synchronously instead. While a
request is served, the lane watches for its client's disconnect (:func:`client_gone`), so
a view's long work (a MatrixShell command) can stop when nobody waits for it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import close_old_connections, connections
from django.db.backends.signals import connection_created
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import Resolver404, get_resolver, set_script_prefix

from matrixcloud.errors import error_payload

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds a connection whose last query succeeded is trusted to work (no health check
# at the next request's first query). A database restarted meanwhile fails that request
# with 503 "database unavailable"; the connection is then replaced.
TRUSTED_FOR = 1.0

# request.META key: this request is served by the lane and may get a DeferredResponse.
DEFERRABLE = "matrixcloud.deferrable"
# request.META key: a threading.Event set once the request's client has gone away.
CLIENT_GONE = "matrixcloud.client_gone"

_lane = threading.local()


def in_lane() -> bool:
    """Whether this thread is one of the web lane's (persistent connections)."""
    return bool(getattr(_lane, "active", False))


def client_gone(request: HttpRequest) -> Callable[[], bool]:
    """Whether ``request``'s client has gone away (disconnected before its answer), for
    work that should stop with it; always false outside the web lane (the test client)."""
    gone = request.META.get(CLIENT_GONE)
    return gone.is_set if isinstance(gone, threading.Event) else _never


def _never() -> bool:
    return False


async def _watch_disconnect(receive: Any, gone: threading.Event) -> None:
    """Set ``gone`` when the server says the client disconnected (the body is read, so
    nothing else of the request is still to come)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _send_until_gone(sending: Awaitable[None], watcher: asyncio.Future[None]) -> None:
    """Send a streaming response until it ends or its client goes away, whichever comes
    first: a stream (SSE) whose client left is cancelled, which ends its iterator."""
    task = asyncio.ensure_future(sending)
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # a failure of the stream itself


def _mark_lane_thread() -> None:
    _lane.active = True


def _trust_recent_connections() -> None:
    """Skip the health check of this thread's connections that worked a moment ago."""
    now = time.monotonic()
    for conn in connections.all(initialized_only=True):
        worked_at = getattr(conn, "worked_at", None)
        if conn.connection is not None and worked_at is not None and now - worked_at < TRUSTED_FOR:
            conn.health_check_done = True  # type: ignore[attr-defined]


def _note_success(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
    """An execute wrapper: the time of the connection's last successful query."""
    result = execute(sql, params, many, context)
    context["connection"].worked_at = time.monotonic()
    return result


def watch_queries(connection: Any) -> None:
    """Have ``connection`` note its successful queries (for :func:`_trust_recent_connections`)."""
    if _note_success not in connection.execute_wrappers:
        connection.execute_wrappers.append(_note_success)


def _keep_lane_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    """A connection opened by a lane thread outlives the request (until its max age)."""
    if in_lane():
        max_age = settings.MATRIX_WEB_CONN_MAX_AGE
        connection.close_at = None if max_age is None else time.monotonic() + max_age
        connection.health_check_enabled = True
        watch_queries(connection)


connection_created.connect(_keep_lane_connection, dispatch_uid="matrixcloud.lanes.keep")


class DeferredResponse(HttpResponse):
    """A response whose status and body come from ``complete`` on the event loop.

    Middleware sees it as a 200 with an empty body and may add headers; the handler then
    awaits ``complete``, which sets ``status_code`` and ``content`` (never headers that
    middleware already decided on, except the content type and length).
    """

    def __init__(self, complete: Callable[[DeferredResponse], Awaitable[None]]) -> None:
        super().__init__(b"", content_type="application/json")
        self.complete = complete


async def _complete(response: DeferredResponse) -> None:
    try:
        await response.complete(response)
    except Exception:
        logger.exception("a deferred response failed to complete")
        response.status_code = 500
        response.content = json.dumps(error_payload("internal server error", 500))
    if response.has_header("Content-Length"):  # set by middleware on the empty body
        response["Content-Length"] = str(len(response.content))


_handler: LanedASGIHandler | None = None


async def run_in_lane(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a lane thread (database work of a deferred response), with the
    same connection care a request gets."""
    if _handler is None:
        raise RuntimeError("no web lane in this process")

    def call() -> T:
        close_old_connections()
        return fn(*args)

    return await asyncio.get_running_loop().run_in_executor(_handler.pool, call)


class LanedASGIHandler(ASGIHandler):
    """Django's ASGI handler with sync views served by a thread pool in one hop."""

    def __init__(self) -> None:
        super().__init__()
        self._sync = BaseHandler()
        self._sync.load_middleware(is_async=False)
        self.pool = ThreadPoolExecutor(
            max_workers=settings.MATRIX_WEB_THREADS,
            thread_name_prefix="web-lane",
            initializer=_mark_lane_thread,
        )
        global _handler
        _handler = self

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._is_async_view(scope):
            await super().__call__(scope, receive, send)
            return
        await self._serve_in_lane(scope, receive, send)

    def _is_async_view(self, scope: dict[str, Any]) -> bool:
        """Whether the URL resolves to an async view (which keeps Django's async path)."""
        path = scope["path"]
        prefix = get_script_prefix(scope).rstrip("/")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        try:
            match = get_resolver().resolve(path)
        except Resolver404:
            return False
        return iscoroutinefunction(match.func)

    async def _serve_in_lane(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except Exception:  # RequestAborted: the client went away before its body arrived
            return
        loop = asyncio.get_running_loop()
        gone = threading.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            response = await loop.run_in_executor(self.pool, self._respond, scope, body_file, gone)
            if isinstance(response, DeferredResponse):
                await _complete(response)
            if response.streaming:
                await _send_until_gone(self.send_response(response, send), watcher)
            else:
                await self.send_response(response, send)
            await loop.run_in_executor(self.pool, response.close)
        finally:
            watcher.cancel()
            body_file.close()

    def _respond(
        self, scope: dict[str, Any], body_file: Any, gone: threading.Event
    ) -> HttpResponseBase:
        """The whole sync part of a request, in a lane thread (as a WSGI server does)."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        _trust_recent_connections()  # after the signal (which resets the check)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            return error_response
        request.META[DEFERRABLE] = True
        request.META[CLIENT_GONE] = gone
        response = self._sync.get_response(request)
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        return response
