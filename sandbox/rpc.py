"""The sandbox RPC on the bus: a tool call from a web process to the host of its session.

Calls are latency-critical (PRODUCT.md §11: under 5 ms over a direct stdio call), so
they do not go through the channel layer's send/receive (about four Redis round trips
each, plus the hop from a sync view to the event loop): each host has a *mailbox*, a
Redis list on the bus named after its channel (``Job.runner``), and each call a reply
list of its own. The web process, in its sync view thread, pushes the request and
blocks on the reply (``BLPOP``, bounded); the host pops requests and pushes replies
(sandbox/host/mailbox.py). Start and stop messages stay on the channel layer.

Request: ``{"type": "sandbox.call", "request_id", "job_id", "name", "arguments",
"caller", "reply_key"}``; reply: ``{"type": "sandbox.reply", "request_id", "ok": true,
"result", "duration_ms"}`` or ``{"ok": false, "error", "kind"}``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

CALL_TYPE = "sandbox.call"
REPLY_TYPE = "sandbox.reply"
# Past the call's hard cap, how long to wait for the host's own timeout reply.
REPLY_MARGIN = 5.0
# Requests and replies nobody takes are dropped after this long.
KEY_TTL = 300
# A reply ``kind`` of our own: the bus could not carry the request at all.
BUS_DOWN = "bus_down"

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def mailbox_key(runner: str) -> str:
    """The Redis list a host takes calls from: named after its channel (``Job.runner``)."""
    return f"{settings.MATRIX_BUS_PREFIX}:sandbox:calls:{runner}"


def reply_key(request_id: str) -> str:
    return f"{settings.MATRIX_BUS_PREFIX}:sandbox:reply:{request_id}"


def bus_client() -> redis.Redis | None:
    """This process's client of the bus (thread-safe pool), or None without REDIS_URL."""
    global _client
    if not settings.REDIS_URL:
        return None
    with _client_lock:
        if _client is None:
            # A reply is awaited with a blocking pop as long as the call may run; the
            # socket must outwait it (redis-py's default read timeout is 5 s).
            _client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=2.0,
                socket_timeout=settings.MATRIX_SANDBOX_CALL_HARD_CAP + REPLY_MARGIN + 10.0,
                health_check_interval=30,
            )
        return _client


def host_call(
    *,
    channel: str,
    job_id: str,
    name: str,
    arguments: dict[str, Any],
    caller: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """Ask the host on ``channel`` to call tool ``name`` of ``job_id``'s server; block
    (at most ``timeout`` s) for its reply.

    Returns the host's ``sandbox.reply``; a host that does not answer in time is a
    ``timeout`` failure, a bus that is missing or fails is :data:`BUS_DOWN`.
    """
    client = bus_client()
    if client is None:
        return _bus_down("REDIS_URL is unset, so no sandbox host can be reached")
    request_id = uuid.uuid4().hex
    message = {
        "type": CALL_TYPE,
        "request_id": request_id,
        "job_id": job_id,
        "name": name,
        "arguments": arguments,
        "caller": caller,
        "reply_key": reply_key(request_id),
    }
    try:
        return _round_trip(client, mailbox_key(channel), message, timeout)
    except (redis.RedisError, OSError) as exc:
        logger.warning("sandbox call to %s failed on the bus", channel, exc_info=True)
        return _bus_down(str(exc))


def _round_trip(
    client: redis.Redis, mailbox: str, message: dict[str, Any], timeout: float
) -> dict[str, Any]:
    pipe = client.pipeline(transaction=False)
    pipe.rpush(mailbox, json.dumps(message, separators=(",", ":")))
    pipe.expire(mailbox, KEY_TTL)
    pipe.execute()
    popped = client.blpop([message["reply_key"]], timeout=timeout)
    if popped is None:
        return {
            "ok": False,
            "kind": "timeout",
            "error": f"the sandbox host did not answer within {timeout:g} s",
        }
    reply: dict[str, Any] = json.loads(popped[1])
    return reply


def _bus_down(reason: str) -> dict[str, Any]:
    return {"ok": False, "kind": BUS_DOWN, "error": f"the bus is unavailable: {reason}"}
