"""The web side of the sandbox RPC: send one request to a host's channel, await its reply.

Each request gets a reply channel of its own (named by its request id), so a reply can
only be the answer to it; the wait is bounded. Nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

CALL_TYPE = "sandbox.call"
REPLY_TYPE = "sandbox.reply"
# Past the call's hard cap, how long to wait for the host's own timeout reply.
REPLY_MARGIN = 5.0
REPLY_CHANNEL_PREFIX = "sandbox.reply."
# A reply ``kind`` of our own: the bus could not carry the request at all.
BUS_DOWN = "bus_down"


async def _ask(channel: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    layer: Any = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    # A plain channel of its own, not a process-local one (``new_channel``): those share
    # one receive loop per layer, which only one event loop may drive, and sync views
    # outside an ASGI server each run their async_to_sync on a loop of their own.
    reply_to = f"{REPLY_CHANNEL_PREFIX}{message['request_id']}"
    await layer.send(channel, {**message, "reply_channel": reply_to})
    async with asyncio.timeout(timeout):
        while True:
            reply = dict(await layer.receive(reply_to))
            if reply.get("request_id") == message["request_id"]:
                return reply


def host_call(
    *,
    channel: str,
    job_id: str,
    name: str,
    arguments: dict[str, Any],
    caller: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """Ask the host on ``channel`` to call tool ``name`` of ``job_id``'s server.

    Returns the host's ``sandbox.reply`` (``ok`` with ``result`` and ``duration_ms``,
    or ``ok: false`` with ``error`` and ``kind``); a host that does not answer within
    ``timeout`` s is a ``timeout`` failure, a bus that fails is :data:`BUS_DOWN`.
    """
    message = {
        "type": CALL_TYPE,
        "request_id": uuid.uuid4().hex,
        "job_id": job_id,
        "name": name,
        "arguments": arguments,
        "caller": caller,
    }
    try:
        return async_to_sync(_ask)(channel, message, timeout)
    except TimeoutError:
        return {
            "ok": False,
            "kind": "timeout",
            "error": f"the sandbox host did not answer within {timeout:g} s",
        }
    except Exception as exc:  # the bus: refused, reset, restarting
        logger.warning("sandbox call to %s failed on the bus", channel, exc_info=True)
        return {"ok": False, "kind": BUS_DOWN, "error": f"the bus is unavailable: {exc}"}
