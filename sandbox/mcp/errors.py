"""The MCP client's exceptions: one base class, one subclass per way a call can fail.

The sandbox host turns every one of these into a 409 with ``str(exc)`` as the message,
so each message names the method and says what happened in words a person can act on.
"""

from __future__ import annotations

from typing import Any


class McpError(Exception):
    """Any failure of the MCP client: the base the host catches."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class McpTimeout(McpError):
    """A request got no answer in time (its timeout, or the hard cap for tool calls)."""

    def __init__(self, method: str, seconds: float, *, hard_cap: bool = False) -> None:
        self.method = method
        self.seconds = seconds
        self.hard_cap = hard_cap
        limit = "hard cap of " if hard_cap else ""
        super().__init__(f"mcp {method} timed out after {limit}{seconds:g} s")


class McpServerExited(McpError):
    """The server closed its stdout (usually: the process exited) before answering.

    ``code`` is the exit status when the process is known and has exited (negative for
    a signal, as asyncio reports it), else ``None``; ``stderr_tail`` is the last of what
    the server wrote to stderr, for the host's error message.
    """

    def __init__(self, method: str, code: int | None, *, stderr_tail: str = "") -> None:
        self.method = method
        self.code = code
        self.stderr_tail = stderr_tail
        what = f"server exited (code {code})" if code is not None else "server closed its stdout"
        super().__init__(f"mcp {method}: {what}")


class McpClosed(McpError):
    """The client itself was closed (``aclose``) while or before the request ran."""

    def __init__(self, method: str) -> None:
        self.method = method
        super().__init__(f"mcp {method}: client closed")


class McpProtocolError(McpError):
    """The server broke the protocol: an oversized message, a malformed result, a
    version this client does not speak, a pagination loop, a declined input request."""


class McpRemoteError(McpError):
    """The server answered with a JSON-RPC error object."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        self.method = method
        self.code = code
        self.remote_message = message
        self.data = data
        super().__init__(f"mcp {method} error {code}: {message}")
