"""The sandbox host: one asyncio process that holds many live MCP sessions.

``server`` is the process (bus channels, watch loop, shutdown), ``session`` one live
session, ``logs`` its stderr as events, ``records`` the rows it reads and writes.
"""

from sandbox.host.server import START_CHANNEL, SandboxHost
from sandbox.rpc import REPLY_TYPE

__all__ = ["REPLY_TYPE", "START_CHANNEL", "SandboxHost"]
