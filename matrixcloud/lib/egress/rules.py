"""The egress guard's rules: which addresses a fetch may reach, read from the settings.

See :mod:`matrixcloud.lib.egress` for the rules in words; :func:`judge` applies them to
one resolved address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from matrixcloud.errors import ApplicationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) → the addresses it resolves to; tests pass their own to show pinning.
Resolver = Callable[[str, int], list[str]]

ALLOW_VARIABLE = "MATRIX_RUNTIME_EGRESS_ALLOW"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Metadata services of the clouds: AWS/GCP/Azure/Oracle/DigitalOcean (169.254.169.254,
# in 169.254.0.0/16 with all of IPv4 link-local), AWS over IPv6, Alibaba, Azure's
# wireserver. fe80::/10 is IPv6 link-local.
METADATA_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "168.63.129.16/32",
    )
)
UNSPECIFIED_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "::/128"))
SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104  (names of "every address", not bound here)


class EgressError(ApplicationError):
    """A fetch the guard refused (``refused``: a rule said no) or that failed on the way:
    unreachable, too slow, too large, a redirect not followed."""

    http_status = 502

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message, http_status=422 if refused else 502)
        self.refused = refused


@dataclass(frozen=True)
class Service:
    """One of this installation's own listeners, never a fetch's destination."""

    name: str  # "this server's API", "the bus", "the database"
    host: str
    port: int


@dataclass(frozen=True)
class Policy:
    """The rules of this installation, read from its settings (cheap: built per fetch,
    so a changed setting applies at once)."""

    production: bool
    services: tuple[Service, ...]
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def current(cls) -> Policy:
        hosts, networks = _allow_split(getattr(settings, "MATRIX_EGRESS_ALLOW", []))
        return cls(
            production=bool(settings.MATRIX_PRODUCTION),
            services=tuple(_services()),
            allow_hosts=frozenset(hosts),
            allow_networks=tuple(networks),
        )


# --- settings --------------------------------------------------------------------------
def allow_entries(values: Iterable[str], *, source: str = ALLOW_VARIABLE) -> list[str]:
    """``MATRIX_RUNTIME_EGRESS_ALLOW`` checked at start: each entry a host name or a CIDR
    (or one address); ImproperlyConfigured names a bad one."""
    entries = []
    for raw in values:
        value = raw.strip().lower()
        try:
            entries.append(str(ipaddress.ip_network(value, strict=False)))
            continue
        except ValueError:
            pass
        if not _is_host_name(value):
            raise ImproperlyConfigured(f"{source}: {raw!r} is neither a host name nor a CIDR")
        entries.append(value)
    return entries


def _is_host_name(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and all(HOST_LABEL.match(label) for label in labels)


def _allow_split(entries: Iterable[str]) -> tuple[list[str], list[IPNetwork]]:
    hosts: list[str] = []
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.append(entry.rstrip(".").lower())
    return hosts, networks


def _services() -> Iterable[Service]:
    api = "this server's API"
    yield Service(api, str(settings.MATRIX_HOST), int(settings.MATRIX_PORT))
    public = urlsplit(str(getattr(settings, "MATRIX_PUBLIC_URL", "")))
    if public.hostname:
        yield Service(api, public.hostname, _port_of(public))
    bus = urlsplit(str(getattr(settings, "REDIS_URL", "") or ""))
    if bus.scheme in ("redis", "rediss"):
        yield Service("the bus", bus.hostname or "127.0.0.1", _safe_port(bus) or 6379)
    for database in settings.DATABASES.values():
        if "postgresql" in str(database.get("ENGINE", "")):
            host = str(database.get("HOST") or "")  # "" or a socket dir: this machine
            port = int(str(database.get("PORT") or 5432))
            yield Service("the database", "" if host.startswith("/") else host, port)


def _safe_port(parts: Any) -> int | None:
    try:
        return int(parts.port) if parts.port else None
    except ValueError:
        return None


def _port_of(parts: Any) -> int:
    return _safe_port(parts) or DEFAULT_PORTS.get(parts.scheme, 80)


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of ``host`` (one getaddrinfo call), in the system's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- judging ---------------------------------------------------------------------------
def _address(raw: str) -> IPAddress:
    """The address to judge: IPv4-mapped and NAT64 IPv6 addresses are their IPv4."""
    address = ipaddress.ip_address(raw.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64_NETWORK:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _where(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _is_local(address: IPAddress) -> bool:
    """Whether ``address`` is one of this machine's (a socket can bind it)."""
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def _service_addresses(service: Service) -> set[IPAddress] | None:
    """The addresses ``service`` listens on; None: this machine's, every one of them."""
    host = service.host.strip("[]").lower()
    if host in _WILDCARDS or host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        found = {_address(a) for a in system_resolver(host, service.port)}
    except (OSError, ValueError):
        return set()  # a name that does not resolve names no address to refuse
    return None if any(_is_local(a) for a in found) else found


def _own_service(address: IPAddress, port: int, policy: Policy) -> str:
    for service in policy.services:
        if service.port != port:
            continue
        addresses = _service_addresses(service)
        if (addresses is None and _is_local(address)) or (addresses and address in addresses):
            return service.name
    return ""


def _non_global(address: IPAddress) -> str:
    """What kind of non-public address this is, or "" for a public one."""
    if address.is_loopback:
        return "a loopback address"
    if address in SHARED_NETWORK:
        return "a shared (CGNAT) address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return "a private address"
    return ""


def _allowed(host: str, address: IPAddress, policy: Policy, configured: bool) -> bool:
    if configured or host.rstrip(".").lower() in policy.allow_hosts:
        return True
    return any(address in net for net in policy.allow_networks if net.version == address.version)


def judge(
    host: str,
    address: str,
    port: int,
    *,
    policy: Policy,
    configured: bool = False,
) -> None:
    """Raise :class:`EgressError` (refused) when ``host`` at ``address``:``port`` may not
    be fetched under ``policy``; the message names the rule."""
    checked = _address(address)
    where = _where(checked, port)
    if any(checked in net for net in METADATA_NETWORKS if net.version == checked.version):
        raise EgressError(
            f"address {where} is a link-local/metadata address: refused", refused=True
        )
    if any(checked in net for net in UNSPECIFIED_NETWORKS if net.version == checked.version):
        raise EgressError(f"address {where} is an unspecified address: refused", refused=True)
    service = _own_service(checked, port, policy)
    if service:
        raise EgressError(f"address {where} is {service}: refused", refused=True)
    kind = _non_global(checked)
    if policy.production and kind and not _allowed(host, checked, policy, configured):
        raise EgressError(
            f"address {where} is {kind}: refused (allow it with {ALLOW_VARIABLE})", refused=True
        )
