"""The egress guard: every server-side fetch of a URL someone supplied goes through here.

A URL a user (or a job payload, or a stored credential) names can point anywhere the
server can reach: its own API on loopback (where a local-dev request with no token is
trusted), the bus, the database, the cloud's metadata service, the private network.
So a fetch here resolves the name once, judges every address it resolved to, and
connects to the address it judged (no second lookup, so no DNS rebinding), with TLS
checked against the original name. The rules, in order:

1. link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254,
   100.100.100.200, ...) and unspecified ones (0.0.0.0, ::) are refused, always;
2. this installation's own services are refused, always: its API (``MATRIX_RUNTIME_HOST``
   and ``MATRIX_RUNTIME_PORT``, what ``serve`` binds, and ``MATRIX_RUNTIME_PUBLIC_URL``),
   its bus (``REDIS_URL``, which ``serve`` sets for its children when it runs the
   embedded bus) and its database (every PostgreSQL entry of ``DATABASES``); a service
   on this machine is refused at its port on every local address;
3. in production modes (every mode but local-dev) loopback, private, shared (CGNAT),
   unique-local, multicast and reserved addresses are refused, unless the URL is one the
   operator configured (the caller passes those, e.g. ``MATRIX_RUNTIME_OLLAMA_URL``) or
   its host or address is in ``MATRIX_RUNTIME_EGRESS_ALLOW`` (hosts or CIDRs).

Addresses are judged after resolution, so ``2130706433``, ``0x7f.1``, ``127.1`` and
``::ffff:127.0.0.1`` are all 127.0.0.1. A redirect is followed only to the same origin,
re-judged, at most :data:`MAX_REDIRECTS` times. Answers are bounded in size and time.
Every failure is an :class:`EgressError` whose message says what was refused or what
went wrong; a remote body is never part of it (:func:`error_reason` gives a caller a
short, sanitised reason from a JSON error answer, nothing from HTML or text).

This is the floor: it imports no domain app.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from matrixcloud.lib.egress.pinned import Answer, Target, error_reason, fetch_once, sanitise
from matrixcloud.lib.egress.rules import (
    ALLOW_VARIABLE,
    DEFAULT_PORTS,
    EgressError,
    Policy,
    Resolver,
    allow_entries,
    judge,
    system_resolver,
)

MAX_REDIRECTS = 3

__all__ = [
    "ALLOW_VARIABLE",
    "Answer",
    "EgressError",
    "Policy",
    "Resolver",
    "Target",
    "allow_entries",
    "error_reason",
    "judge",
    "origin",
    "request",
    "same_origin",
    "sanitise",
    "system_resolver",
    "target",
    "url_check",
]


# --- resolving and checking a URL --------------------------------------------------------
def _parts(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path+query) of an http(s) URL, or EgressError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressError(f"{url!r} is not a valid URL: {exc}", refused=True) from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise EgressError("must be an http:// or https:// URL with a host", refused=True)
    if parts.username or parts.password:
        raise EgressError("must not carry credentials in the URL", refused=True)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], path


def same_origin(url: str, others: Collection[str]) -> bool:
    """Whether ``url`` has the scheme, host and port of one of ``others``."""
    try:
        origin = _parts(url)[:3]
        return any(_parts(other)[:3] == origin for other in others if other)
    except EgressError:
        return False


def target(
    url: str,
    *,
    configured: Collection[str] = (),
    resolver: Resolver | None = None,
    policy: Policy | None = None,
) -> Target:
    """Resolve ``url``'s host once and judge every address; the checked target.

    ``configured``: URLs the operator configured (engine URLs); a URL of the same origin
    is judged as the operator's (rule 3 does not apply, rules 1 and 2 do)."""
    scheme, host, port, path = _parts(url)
    resolve = resolver or system_resolver
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise EgressError(f"{host} does not resolve: {exc}") from None
    if not addresses:
        raise EgressError(f"{host} does not resolve to any address")
    rules = policy or Policy.current()
    operator = same_origin(url, configured)
    for address in addresses:
        judge(host, address, port, policy=rules, configured=operator)
    return Target(scheme, host, port, tuple(addresses), path, url)


def url_check(url: str, *, configured: Collection[str] = ()) -> str:
    """A check cheap enough for job creation (no DNS): the URL's shape, and, when its host
    is an address (in any spelling) or ``localhost``, the rules; EgressError otherwise.
    The fetch checks again, whatever the name resolves to then."""
    _, host, port, _ = _parts(url)
    try:
        literal = socket.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST)
        addresses = [str(info[4][0]) for info in literal]
    except (OSError, UnicodeError):
        bare = host.rstrip(".").lower()
        if bare != "localhost" and not bare.endswith(".localhost"):
            return url
        addresses = ["127.0.0.1", "::1"]
    rules = Policy.current()
    operator = same_origin(url, configured)
    for address in addresses:
        judge(host, address, port, policy=rules, configured=operator)
    return url


def request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    max_bytes: int,
    configured: Collection[str] = (),
    resolver: Resolver | None = None,
) -> Answer:
    """Fetch ``url`` through the guard (see the module docstring); any status comes back
    as an :class:`Answer`, any refusal or failure is an :class:`EgressError`."""
    sent = {"Accept": "application/json", "Connection": "close", **(headers or {})}
    body = None
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent["Content-Type"] = "application/json"
    deadline = time.monotonic() + max(timeout, 0.1)
    for _hop in range(MAX_REDIRECTS + 1):
        where = target(url, configured=configured, resolver=resolver)
        left = max(deadline - time.monotonic(), 0.05)
        answer = fetch_once(
            method, where, body=body, headers=sent, timeout=left, max_bytes=max_bytes
        )
        location = answer.headers.get("location", "")
        if answer.status not in (301, 302, 303, 307, 308) or not location:
            return answer
        url = _redirect(url, location, answer.status, configured=configured, resolver=resolver)
        if answer.status not in (307, 308):  # 301/302/303: the next request is a GET
            method, body = ("HEAD" if method == "HEAD" else "GET"), None
            sent.pop("Content-Type", None)
    raise EgressError(f"more than {MAX_REDIRECTS} redirects: not followed")


def _redirect(
    url: str,
    location: str,
    status: int,
    *,
    configured: Collection[str],
    resolver: Resolver | None,
) -> str:
    """The next hop: judged like the first one, and only to the same origin."""
    following = urljoin(url, location)
    target(following, configured=configured, resolver=resolver)  # refused: says so by name
    if _parts(following)[:3] != _parts(url)[:3]:
        raise EgressError(
            f"the answer ({status}) redirected to another host ({origin(following)}): not followed"
        )
    return following


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (EgressError if it is no http(s) URL)."""
    scheme, host, port, _ = _parts(url)
    return f"{scheme}://{host}:{port}"
