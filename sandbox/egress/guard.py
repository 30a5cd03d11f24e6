"""The proxy.py plugin of a session's egress proxy (runs in the proxy's process).

The session's allowlist comes in ``MATRIX_EGRESS_SESSION_ALLOW`` (JSON, set by
:mod:`sandbox.egress.runner`). For each request or ``CONNECT``:

1. the host must be on the list, else 403;
2. the name is resolved once, and every address judged: loopback is refused always
   (this installation and every other session listen there), then
   :func:`matrixcloud.lib.egress.rules.judge` refuses link-local/metadata addresses
   and this installation's API, bus and database, whatever the list says;
3. the proxy connects to the address judged (``resolve_dns``), not to a second lookup.

Each decision is one JSON line on standard output (``{"event": "denied", ...}`` or
``allowed``), which the sandbox host turns into session events and counts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")
django.setup()

from proxy.http.exception import HttpRequestRejected  # noqa: E402
from proxy.http.parser import HttpParser  # noqa: E402
from proxy.http.proxy import HttpProxyBasePlugin  # noqa: E402

from matrixcloud.lib.egress.rules import EgressError, Policy, judge, system_resolver  # noqa: E402
from sandbox.egress import AllowEntry, entry_parse  # noqa: E402
from sandbox.egress.guard_env import ALLOW_VARIABLE  # noqa: E402

ALLOW: list[AllowEntry] = [
    entry_parse(raw) for raw in json.loads(os.environ.get(ALLOW_VARIABLE, "[]"))
]


def report(event: str, host: str, port: int, reason: str = "") -> None:
    """One decision, one line, one write (atomic on a pipe: under PIPE_BUF)."""
    line = json.dumps({"event": event, "host": host[:253], "port": port, "reason": reason[:300]})
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def address_check(host: str, port: int) -> str:
    """The one address of ``host`` the proxy may connect to; :class:`EgressError` if
    none (every address it resolves to is judged, as the egress guard does)."""
    policy = Policy.current()
    try:
        addresses = system_resolver(host, port)
    except OSError as exc:
        raise EgressError(f"cannot resolve {host}: {exc}") from exc
    if not addresses:
        raise EgressError(f"{host} resolves to no address")
    for raw in addresses:
        address = ipaddress.ip_address(raw.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None) or address
        if mapped.is_loopback:
            raise EgressError(f"address {raw} is loopback: refused", refused=True)
        judge(host, raw, port, policy=policy)
    return addresses[0]


class AllowlistGuard(HttpProxyBasePlugin):
    """Refuse what the session's list does not name, and what no list may name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned: str | None = None

    def before_upstream_connection(self, request: HttpParser) -> HttpParser | None:
        host = (request.host or b"").decode("ascii", "replace").lower().rstrip(".")
        port = int(request.port or 0)
        if not any(entry.admits(host, port) for entry in ALLOW):
            self._refuse(host, port, "not on the session's allowlist")
        try:
            self.pinned = address_check(host, port)
        except EgressError as exc:
            self._refuse(host, port, exc.message)
        report("allowed", host, port)
        return request

    def resolve_dns(self, host: str, port: int) -> tuple[str | None, Any]:
        return self.pinned, None

    def _refuse(self, host: str, port: int, reason: str) -> None:
        report("denied", host, port, reason)
        body = f"egress to {host}:{port} refused: {reason}\n".encode()
        raise HttpRequestRejected(status_code=403, reason=b"Forbidden", body=body)
