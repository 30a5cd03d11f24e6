"""The one small HTTP client, for URLs the operator configured (on httpx2).

``fetch(method, url, json=..., headers=..., timeout=...)`` sends one request and gives
back a :class:`Reply` (status, text, the decoded JSON where the body is JSON) for any
answer, 4xx and 5xx included; a server that does not answer (refused, DNS, TLS, a
timeout, a URL that is not http(s)) is one error, :class:`Unreachable`.

Operator-configured URLs only: a control plane this installation joined, the package
registry npm and uv use, a serving engine named by ``MATRIX_RUNTIME_*_URL``. A URL that
comes from a user (a model import, a provider endpoint, an agent's ``base_url``) must go
through the egress guard instead (:mod:`matrixcloud.lib.egress`: ``egress.request``,
``egress.url_check``), which refuses this server's own services, metadata addresses and
private networks; this helper checks none of that.

Certificates are the system's (as ``urllib`` had them); the machine's proxy variables
apply, except to a loopback URL, which is never proxied, and with ``proxy=False``.
"""

from __future__ import annotations

import ipaddress
import json as jsonlib
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class Unreachable(Exception):
    """No answer from ``url``: not http(s), refused, unresolvable, TLS, a timeout."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = str(reason)


@dataclass(frozen=True)
class Reply:
    """An answer: its status, its body as text (at most ``max_bytes`` of it) and that
    body decoded as JSON (None when it is not JSON, or was cut short)."""

    status: int
    text: str
    json: Any = field(default=None)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (``localhost`` or a loopback address)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch(
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    proxy: bool = True,
    follow_redirects: bool = True,
) -> Reply:
    """Send one request to an operator-configured ``url`` (``json``: the body, encoded);
    the answer whatever its status, or :class:`Unreachable`. Reads at most
    ``max_bytes`` of the body."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise Unreachable(url, "not an http(s) URL")
    try:
        with (
            _client(url, timeout=timeout, proxy=proxy, follow_redirects=follow_redirects) as client,
            client.stream(method, url, json=json, headers=headers) as response,
        ):
            body = _read(response, max_bytes)
    except (httpx2.HTTPError, httpx2.InvalidURL, OSError, ValueError) as exc:
        raise Unreachable(url, str(exc) or type(exc).__name__) from exc
    text = body.decode(errors="replace")
    return Reply(response.status_code, text, _decoded(text) if len(body) < max_bytes else None)


def _client(url: str, *, timeout: float, proxy: bool, follow_redirects: bool) -> httpx2.Client:
    verify = ssl.create_default_context()
    # An explicit transport keeps httpx2 from reading the proxy variables.
    transport = None if proxy and not is_loopback(url) else httpx2.HTTPTransport(verify=verify)
    return httpx2.Client(
        verify=verify, transport=transport, timeout=timeout, follow_redirects=follow_redirects
    )


def _read(response: httpx2.Response, max_bytes: int) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= max_bytes:
            return bytes(body[:max_bytes])
    return bytes(body)


def _decoded(text: str) -> Any:
    try:
        return jsonlib.loads(text) if text.strip() else None
    except ValueError:
        return None
