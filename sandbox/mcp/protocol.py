"""What the client says and accepts on the wire: versions, envelopes, handshake results,
and the answers it gives to requests a server sends to it.

Two eras of MCP share the framing but not the start:

* 2026-07-28 ("modern"): no handshake. ``server/discover`` returns the server's
  versions and capabilities, and every request carries the client's protocol version,
  info and capabilities in ``params._meta``. Notifications outside a request
  (``list_changed``) arrive on a ``subscriptions/listen`` stream the client opens.
  Server-to-client requests are replaced by ``input_required`` results that the
  client answers by retrying the call with ``inputResponses``.
* 2024-11-05 … 2025-11-25 ("handshake"): ``initialize`` then
  ``notifications/initialized``; servers send requests (``roots/list``, ``ping``,
  ``sampling/createMessage``, ``elicitation/create``) and notifications at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
CLIENT_INFO = {"name": "matrixcloud", "version": "0.2.0"}
# The client declares no roots, sampling or elicitation, so a well-behaved server does
# not ask; one that asks anyway still gets an answer (see answer_server_request).
CLIENT_CAPABILITIES: dict[str, Any] = {}

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"

METHOD_NOT_FOUND = -32601
UNSUPPORTED_PROTOCOL_VERSION = -32022
USER_REJECTED = -1  # the spec's code for a declined sampling request
# Requests the spec forbids cancelling.
UNCANCELLABLE = frozenset({"initialize", "server/discover"})


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server said about itself when the session was set up."""

    protocol_version: str
    modern: bool
    name: str
    version: str
    capabilities: dict[str, Any]
    instructions: str | None = None

    @property
    def tools_list_changed(self) -> bool:
        """Whether the server says it sends ``notifications/tools/list_changed``."""
        tools = self.capabilities.get("tools")
        return isinstance(tools, dict) and tools.get("listChanged") is True

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for events and logs."""
        return {
            "protocol_version": self.protocol_version,
            "server": {"name": self.name, "version": self.version},
            "capabilities": self.capabilities,
        }


def modern_meta(client_info: dict[str, Any]) -> dict[str, Any]:
    """The per-request envelope every 2026-07-28 request carries in ``params._meta``."""
    return {
        META_PROTOCOL_VERSION: MODERN_VERSION,
        META_CLIENT_INFO: client_info,
        META_CLIENT_CAPABILITIES: CLIENT_CAPABILITIES,
    }


def initialize_params(client_info: dict[str, Any]) -> dict[str, Any]:
    """``initialize`` offering the newest handshake-era version."""
    return {
        "protocolVersion": HANDSHAKE_VERSIONS[0],
        "capabilities": CLIENT_CAPABILITIES,
        "clientInfo": client_info,
    }


def server_info_from_initialize(result: Any) -> ServerInfo | str:
    """A ServerInfo from an ``initialize`` result, or why it cannot be used."""
    if not isinstance(result, dict):
        return "initialize result is not an object"
    version = result.get("protocolVersion")
    if version not in HANDSHAKE_VERSIONS:
        return (
            f"server chose protocol {version!r}; this client speaks {', '.join(HANDSHAKE_VERSIONS)}"
        )
    return _server_info(version, False, result, result.get("serverInfo"))


def server_info_from_discover(result: Any) -> ServerInfo | None:
    """A ServerInfo from a ``server/discover`` result, or ``None`` when the server does
    not offer 2026-07-28 (then the client falls back to ``initialize``)."""
    if not isinstance(result, dict):
        return None
    versions = result.get("supportedVersions")
    if not isinstance(versions, list) or MODERN_VERSION not in versions:
        return None
    meta = result.get("_meta")
    return _server_info(
        MODERN_VERSION, True, result, meta.get(META_SERVER_INFO) if isinstance(meta, dict) else None
    )


def _server_info(version: str, modern: bool, result: dict[str, Any], info: Any) -> ServerInfo:
    info = info if isinstance(info, dict) else {}
    capabilities = result.get("capabilities")
    instructions = result.get("instructions")
    return ServerInfo(
        protocol_version=version,
        modern=modern,
        name=str(info.get("name") or ""),
        version=str(info.get("version") or ""),
        capabilities=capabilities if isinstance(capabilities, dict) else {},
        instructions=instructions if isinstance(instructions, str) else None,
    )


def answer_server_request(method: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(result, error)`` for a request the server sent to this client: empty roots,
    a declined elicitation, a rejected sampling request, ``{}`` for ping, and
    method-not-found for anything else."""
    if method == "ping":
        return {}, None
    if method == "roots/list":
        return {"roots": []}, None
    if method == "elicitation/create":
        return {"action": "decline"}, None
    if method == "sampling/createMessage":
        return None, {"code": USER_REJECTED, "message": "sampling is not available in this sandbox"}
    return None, {"code": METHOD_NOT_FOUND, "message": f"Method not found: {method}"}
