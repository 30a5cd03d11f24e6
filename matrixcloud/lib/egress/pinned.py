"""Connections to the address the guard checked, and what may be said of an answer.

:class:`Target` is a judged URL; the connection classes connect to its addresses only
(no second lookup) and check TLS against its original name; :func:`fetch_once` reads
one bounded answer; :func:`error_reason` is the only text of a remote body a caller
may show.
"""

from __future__ import annotations

import functools
import http.client
import json
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from matrixcloud.lib.egress.rules import EgressError

REASON_CHARS = 200


@dataclass(frozen=True)
class Answer:
    """What the server answered: status, headers (lower-case names), body, final URL."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body or b"null")


@dataclass(frozen=True)
class Target:
    """A URL judged: where to connect (the checked addresses) and what to say (Host, SNI)."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    path: str = field(default="/")
    url: str = ""


# --- connecting to the checked address --------------------------------------------------
class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to the checked addresses of its host, never a new lookup."""

    def __init__(self, where: Target, timeout: float) -> None:
        super().__init__(where.host, where.port, timeout=timeout)
        self.addresses = where.addresses

    def _pinned_socket(self) -> socket.socket:
        last: OSError | None = None
        for address in self.addresses:
            try:
                return socket.create_connection((address, self.port), self.timeout)
            except OSError as exc:
                last = exc
        raise last or OSError("no address to connect to")

    def connect(self) -> None:
        self.sock = self._pinned_socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """TLS to the checked address; the certificate is checked against the original name
    (SNI and hostname verification use it)."""

    default_port = 443

    def connect(self) -> None:
        raw = self._pinned_socket()
        self.sock = _tls_context().wrap_socket(raw, server_hostname=self.host)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trust store, hostname checking on (loaded once, on first use)."""
    return ssl.create_default_context()


def _connection(where: Target, timeout: float) -> _PinnedHTTPConnection:
    kind = _PinnedHTTPSConnection if where.scheme == "https" else _PinnedHTTPConnection
    return kind(where, timeout)


def _read(
    response: http.client.HTTPResponse, sock: socket.socket, deadline: float, max_bytes: int
) -> bytes:
    """The body, at most ``max_bytes`` and before ``deadline`` (a slow drip stops too)."""
    chunks: list[bytes] = []
    size = 0
    while not response.isclosed():  # it closes itself once the whole body is read
        left = deadline - time.monotonic()
        if left <= 0:
            raise EgressError("the answer did not arrive in time")
        sock.settimeout(left)
        chunk = response.read(min(65536, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise EgressError(f"the answer is larger than {max_bytes} bytes")
    return b"".join(chunks)


def fetch_once(
    method: str,
    where: Target,
    *,
    body: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
    max_bytes: int,
) -> Answer:
    """One request to ``where``'s checked addresses; its answer, read within bounds."""
    deadline = time.monotonic() + timeout
    connection = _connection(where, timeout)
    try:
        connection.connect()
        sock = connection.sock  # kept: getresponse() may hand it to the response
        connection.request(method, where.path, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = _read(response, sock, deadline, max_bytes)
        found = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, found, data, where.url)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        raise EgressError(f"{_describe(where)} could not be reached: {_why(exc)}") from None
    finally:
        connection.close()


def _describe(where: Target) -> str:
    return f"{where.scheme}://{where.host}:{where.port}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return str(getattr(exc, "strerror", None) or exc) or type(exc).__name__


# --- what may be said about an answer ---------------------------------------------------
def error_reason(answer: Answer) -> str:
    """A short, printable reason from a JSON error answer (OpenAI's ``{"error":
    {"message"}}``, ``{"error": "..."}``, ``{"detail"}``, ``{"message"}``); "" for any
    other answer: a remote body is never echoed."""
    if "json" not in answer.headers.get("content-type", "").lower():
        return ""
    try:
        parsed = answer.json()
    except ValueError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    error = parsed.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    for candidate in (message, parsed.get("detail"), parsed.get("message")):
        if isinstance(candidate, str) and candidate.strip():
            return sanitise(candidate)
    return ""


def sanitise(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` on one line, printable characters only, at most ``limit`` of them."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
