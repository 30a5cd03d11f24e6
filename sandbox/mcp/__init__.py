"""An asyncio MCP client over a server's stdio pipes, for the sandbox host.

No Django here: the host (and benchmarks, and tests) use it on plain asyncio pipes.
See :mod:`sandbox.mcp.client` for how to use it.
"""

from .client import ClientLimits, McpClient
from .connection import ConnectionLimits
from .errors import (
    McpClosed,
    McpError,
    McpProtocolError,
    McpRemoteError,
    McpServerExited,
    McpTimeout,
)
from .protocol import HANDSHAKE_VERSIONS, MODERN_VERSION, ServerInfo
from .tools import ListLimits, McpTool, tool_fingerprint

__all__ = [
    "HANDSHAKE_VERSIONS",
    "MODERN_VERSION",
    "ClientLimits",
    "ConnectionLimits",
    "ListLimits",
    "McpClient",
    "McpClosed",
    "McpError",
    "McpProtocolError",
    "McpRemoteError",
    "McpServerExited",
    "McpTimeout",
    "McpTool",
    "ServerInfo",
    "tool_fingerprint",
]
