"""A few hot requests answered on the event loop, before Django; the rest go to Django.

A tool call through Django costs milliseconds of middleware, DRF and thread hops, most of
it the same work for every call of one caller on one session. A *fast route* answers
such a request on the event loop from what an earlier request, served by Django, left
behind (who the caller is, where the session runs), and otherwise *declines*: the
request then goes to Django unchanged, its body replayed, and Django's answer is the
answer. So a fast route never decides anything Django would decide differently; it
only skips repeating a decision that is known to still hold.

Routes are registered by the project's ASGI entry point (``matrixcloud/asgi.py``), so
this module knows no app. :class:`MemoizedGet` is the simplest route: a constant
response (``GET /v1/health``) served once by Django, then replayed byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]  # (scope, receive, send)


class Declined(Exception):
    """The fast route will not answer this request: Django does, with ``body`` replayed."""


@dataclass
class Incoming:
    """A request as a fast route sees it: its scope, headers (lower-case names), body,
    the path's match, and ``forward``: hand the request to Django (body replayed) with
    the given ``send``."""

    scope: Scope
    headers: dict[bytes, bytes]
    body: bytes
    match: re.Match[str]
    forward: Callable[[Send], Awaitable[None]]

    def header(self, name: bytes) -> bytes:
        return self.headers.get(name, b"")


# A fast handler answers through ``send`` (or through ``incoming.forward``) and returns,
# or raises Declined before it has sent anything.
Handler = Callable[[Incoming, Send], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    method: str
    path: re.Pattern[str]
    handler: Handler
    max_body: int = 0  # bytes read before the handler runs; past it, Django answers


class FastRoutes:
    """ASGI: try each route for an HTTP request; a declined request goes to ``app``."""

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                if scope["method"] != route.method:
                    continue
                match = route.path.fullmatch(scope["path"])
                if match is not None:
                    await self._try(route, match, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _try(
        self, route: Route, match: re.Match[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        chunks, complete = await _read_body(receive, route.max_body)
        if chunks is None:  # the client went away before its body arrived
            return
        replayed = _replay(chunks, complete, receive)

        async def forward(to: Send) -> None:
            await self.app(scope, replayed, to)

        if not complete:  # past the route's bound: Django reads the rest (and answers 413)
            await forward(send)
            return
        incoming = Incoming(scope, dict(scope["headers"]), b"".join(chunks), match, forward)
        try:
            await route.handler(incoming, send)
        except Declined:
            await forward(send)


async def _read_body(receive: Receive, limit: int) -> tuple[list[bytes] | None, bool]:
    """The request body's chunks and whether that is all of it (reading stops past
    ``limit`` bytes); None if the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return chunks, True
        if size > limit:
            return chunks, False


def _replay(chunks: list[bytes], complete: bool, receive: Receive) -> Receive:
    """``receive`` that first gives back what was already read, as one message."""
    pending = [b"".join(chunks)]

    async def replayed() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": not complete}
        return await receive()

    return replayed


async def send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """One complete response: ``headers`` as given, plus its Content-Length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def without_length(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name.lower() != b"content-length"]


class MemoizedGet:
    """A route for a GET whose answer never changes while the process lives (health):
    the first plain request is served by Django and its answer kept; later ones get
    that answer again. A query string, or any answer but a 200, stays Django's."""

    def __init__(self) -> None:
        self.kept: tuple[list[tuple[bytes, bytes]], bytes] | None = None

    async def __call__(self, incoming: Incoming, send: Send) -> None:
        if incoming.scope.get("query_string"):
            raise Declined("a query string")
        if self.kept is not None:
            headers, body = self.kept
            await send_response(send, 200, headers, body)
            return
        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def keeping(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                headers = start.get("headers", [])
                cookie = any(name.lower() == b"set-cookie" for name, _ in headers)
                if (
                    not message.get("more_body", False)
                    and start.get("status") == 200
                    and not cookie
                ):
                    self.kept = (without_length(headers), b"".join(parts))
            await send(message)

        await incoming.forward(keeping)
