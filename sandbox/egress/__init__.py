"""Sandbox egress by allowlist: what a session may reach, and who decides.

A sandbox has no network of its own (bubblewrap's ``--unshare-net``: only its own
loopback). A session with an allowlist gets one route out: an HTTP proxy on the sandbox
host (proxy.py, run per session by :mod:`sandbox.egress.runner` with the
:mod:`sandbox.egress.guard` plugin), reached through a Unix socket bound into the
sandbox and relayed to ``127.0.0.1:3128`` inside it by :mod:`sandbox.egress.bridge`;
``HTTP(S)_PROXY`` point there. The proxy lets a request or ``CONNECT`` through only to a
host on the session's list, and never to loopback, this installation's API, bus or
database, or a link-local/metadata address, whatever the list says (it resolves the
name once, judges each address with :mod:`matrixcloud.lib.egress.rules` and connects
to the address it judged). Every refusal is an ``egress_denied`` event of the session,
and counted on its row.

A session's list is its catalog entry's (``egress`` in models_registry/data/catalog.json,
e.g. ``api.github.com`` for GitHub) plus what the request names in ``network_allow``,
which must lie within the operator's ceiling ``MATRIX_RUNTIME_EGRESS_CEILING`` (empty:
a request may name nothing). Entries are ``host``, ``*.domain`` (its subdomains), an
IP address or a CIDR, each with an optional ``:port`` (none: any port); ``*`` in the
ceiling admits any host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from matrixcloud.errors import UnprocessableEntity

CEILING_VARIABLE = "MATRIX_RUNTIME_EGRESS_CEILING"
MAX_ENTRIES = 32
MAX_ENTRY_LENGTH = 253
PROXY_PORT = 3128  # where the proxy answers inside a sandbox (its own loopback)
HOST_NAME = re.compile(r"^(?:\*\.)?(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)*(?!-)[a-z0-9-]{1,63}(?<!-)$")


class EgressRefused(UnprocessableEntity):
    """A ``network_allow`` entry that cannot be read or lies outside the ceiling."""


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a host name, ``*.domain``, an address or a network; a port."""

    host: str
    port: int | None = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        try:
            return ipaddress.ip_network(self.host, strict=False)
        except ValueError:
            return None

    def admits(self, host: str, port: int) -> bool:
        """Whether a connection to ``host``:``port`` (a name or an address) is allowed."""
        if self.port is not None and port != self.port:
            return False
        host = host.lower().rstrip(".")
        if self.host == "*":
            return True
        network = self.network
        if network is not None:
            try:
                return ipaddress.ip_address(host.strip("[]")) in network
            except ValueError:
                return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def covers(self, other: AllowEntry) -> bool:
        """Whether everything ``other`` admits, this admits too (the ceiling's test)."""
        if self.port is not None and other.port != self.port:
            return False
        if self.host == "*":
            return True
        mine, theirs = self.network, other.network
        if mine is not None or theirs is not None:
            return (
                mine is not None
                and theirs is not None
                and mine.version == theirs.version
                and theirs.subnet_of(mine)  # type: ignore[arg-type]
            )
        if self.host.startswith("*."):
            return other.host.endswith(self.host[1:])
        return other.host == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.network is not None else self.host
        return host if self.port is None else f"{host}:{self.port}"


def entry_parse(raw: str, *, star: bool = False) -> AllowEntry:
    """Read ``host[:port]``, ``[v6]:port``, ``*.domain``, an address or a CIDR."""
    text = str(raw).strip().lower()
    if not text or len(text) > MAX_ENTRY_LENGTH:
        raise EgressRefused(f"network_allow entry {raw!r} is empty or too long")
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(raw, rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, rest = text.split(":")
        port = _port(raw, rest)
    if host == "*" and star:
        return AllowEntry("*", port)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        return AllowEntry(
            str(network.network_address) if network.num_addresses == 1 else str(network), port
        )
    if not HOST_NAME.match(host):
        raise EgressRefused(f"network_allow entry {raw!r} is not a host name, address or network")
    return AllowEntry(host, port)


def _port(raw: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EgressRefused(f"network_allow entry {raw!r} has no valid port")
    return int(text)


def ceiling() -> list[AllowEntry]:
    """The operator's ceiling (``MATRIX_RUNTIME_EGRESS_CEILING``), read each time."""
    return [entry_parse(raw, star=True) for raw in settings.MATRIX_EGRESS_CEILING]


def requested_check(values: Iterable[str]) -> list[str]:
    """``network_allow`` of a request, each entry read and within the ceiling (422)."""
    entries = [entry_parse(value) for value in values]
    if len(entries) > MAX_ENTRIES:
        raise EgressRefused(f"network_allow has {len(entries)} entries; at most {MAX_ENTRIES}")
    limits = ceiling()
    outside = [str(entry) for entry in entries if not any(c.covers(entry) for c in limits)]
    if outside:
        raise EgressRefused(
            f"network_allow {', '.join(outside)} is outside what this installation allows "
            f"sandboxes to reach ({CEILING_VARIABLE}"
            + (f": {', '.join(map(str, limits))})" if limits else " is empty)")
        )
    return [str(entry) for entry in entries]
