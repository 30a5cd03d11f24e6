"""The caller's address, as every audit entry, rate limit and log line names it."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The caller's address; ``X-Forwarded-For`` counts only from a trusted proxy."""
    peer = request.META.get("REMOTE_ADDR", "") or ""
    trusted = settings.MATRIX_TRUSTED_PROXIES
    forwarded = request.headers.get("X-Forwarded-For", "")
    if not (forwarded and trusted and _in_networks(peer, trusted)):
        return peer
    # Walk from the nearest hop back; the first untrusted address is the client.
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False
