"""The sandbox RPC on the bus: a tool call from a web process to the host of its session.

Calls are latency-critical (the target: under 5 ms over a direct stdio call; measured in
docs/PERFORMANCE.md), so they do not go through the channel layer's send/receive (about
four Redis round trips each, plus the hop from a sync view to the event loop): each host
has a *mailbox*, a Redis list on the bus named after its channel (``Job.runner``), and
each call a reply list of its own. The web process pushes the request and waits on the
reply (``BLPOP``, bounded), on an event loop: the web lane's when the request is served
by one (:func:`host_call_async`, matrixcloud/lib/lanes.py), else the process's bus loop,
with the calling thread blocked on it (:func:`host_call`): one round trip, one code
path. The host pops requests and pushes replies (sandbox/host/mailbox.py). Start and
stop messages stay on the channel layer.

Request: ``{"type": "sandbox.call", "request_id", "job_id", "name", "arguments",
"caller", "reply_key"}``; reply: ``{"type": "sandbox.reply", "request_id", "ok": true,
"result", "duration_ms"}`` or ``{"ok": false, "error", "kind"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
import weakref
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings
from redis.exceptions import NoScriptError

from matrixcloud.lib.bus import pool_options
from matrixcloud.lib.busloop import bus_run

logger = logging.getLogger(__name__)

CALL_TYPE = "sandbox.call"
REPLY_TYPE = "sandbox.reply"
# Past the call's hard cap, how long to wait for the host's own timeout reply.
REPLY_MARGIN = 5.0
# Requests and replies nobody takes are dropped after this long.
KEY_TTL = 300
# A reply ``kind`` of our own: the bus could not carry the request at all.
BUS_DOWN = "bus_down"

NO_BUS = "REDIS_URL is unset, so no sandbox host can be reached"
# A reply ``kind`` of our own: the caller's cached credentials are out of date
# (matrixcloud/lib/generations.py); nothing was sent.
STALE = "stale"

# A reply ``kind`` of our own: the caller's rate limit is spent (matrixcloud/lib/ratelimit.py);
# nothing was sent.
LIMITED = "limited"

# Send a call only while the generation still reads as the caller's cache recorded it,
# and (with a third key) while the caller's rate-limit window has room:
# KEYS: generation, mailbox[, meter]; ARGV: expected generation, message, key TTL[,
# limit, meter TTL]. 1 if sent, 0 if stale, -1 if limited.
_SEND_IF_CURRENT = """
local now = redis.call('GET', KEYS[1]) or ''
if now ~= ARGV[1] then return 0 end
if #KEYS == 3 then
  local count = redis.call('INCR', KEYS[3])
  if count == 1 then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
  if count > tonumber(ARGV[4]) then return -1 end
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""
# Redis names a script by its SHA-1 (EVALSHA): a name, not a security measure.
_SEND_SHA = hashlib.sha1(_SEND_IF_CURRENT.encode(), usedforsecurity=False).hexdigest()

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def mailbox_key(runner: str) -> str:
    """The Redis list a host takes calls from: named after its channel (``Job.runner``)."""
    return f"{settings.MATRIX_BUS_PREFIX}:sandbox:calls:{runner}"


def reply_key(request_id: str) -> str:
    return f"{settings.MATRIX_BUS_PREFIX}:sandbox:reply:{request_id}"


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
    (at most ``timeout`` s) for its reply. The same round trip as :func:`host_call_async`,
    run on this process's bus loop (matrixcloud/lib/busloop.py) for sync callers: the
    console, and a request not served by a web lane.

    Returns the host's ``sandbox.reply``; a host that does not answer in time is a
    ``timeout`` failure, a bus that is missing or fails is :data:`BUS_DOWN`.
    """
    try:
        return bus_run(
            lambda: host_call_async(
                channel=channel,
                job_id=job_id,
                name=name,
                arguments=arguments,
                caller=caller,
                timeout=timeout,
            ),
            timeout=timeout + REPLY_MARGIN,
            gated=False,  # a call may wait long: it never holds up the bus's sends
        )
    except TimeoutError:
        return _no_answer(timeout)


async def host_call_async(
    *,
    channel: str,
    job_id: str,
    name: str,
    arguments: dict[str, Any],
    caller: dict[str, Any],
    timeout: float,
    generation: tuple[str, str] | None = None,
    meter: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    """:func:`host_call` on the event loop: the reply is awaited, no thread is held.

    With ``generation`` (a counter's key and the value the caller's cache recorded), the
    call is sent only if the counter still reads so, checked on the bus in the same
    round trip; otherwise the reply is a :data:`STALE` failure and nothing was sent.
    With ``meter`` too (a rate-limit key, its limit and its TTL), the call is counted
    there in that round trip, and one past the limit is a :data:`LIMITED` failure.
    """
    client = _async_bus_client()
    if client is None:
        return _bus_down(NO_BUS)
    message = call_message(job_id=job_id, name=name, arguments=arguments, caller=caller)
    mailbox = mailbox_key(channel)
    encoded = json.dumps(message, separators=(",", ":"))
    try:
        if generation is None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.rpush(mailbox, encoded)
                pipe.expire(mailbox, KEY_TTL)
                await pipe.execute()
        else:
            key, expected = generation
            keys: list[str] = [key, mailbox]
            args: list[str | int] = [expected, encoded, KEY_TTL]
            if meter is not None:
                keys.append(meter[0])
                args.extend(meter[1:])
            try:  # by its digest: the script's text crosses only once per bus start
                sent = await client.evalsha(_SEND_SHA, len(keys), *keys, *args)
            except NoScriptError:
                sent = await client.eval(_SEND_IF_CURRENT, len(keys), *keys, *args)
            if sent == 0:
                return {"ok": False, "kind": STALE, "error": "cached credentials are out of date"}
            if sent == -1:
                return {"ok": False, "kind": LIMITED, "error": "the caller's rate limit is spent"}
        popped = await client.blpop([message["reply_key"]], timeout=timeout)
    except (redis.RedisError, OSError) as exc:
        logger.warning("sandbox call to %s failed on the bus", channel, exc_info=True)
        return _bus_down(str(exc))
    if popped is None:
        return _no_answer(timeout)
    reply: dict[str, Any] = json.loads(popped[1])
    return reply


def call_message(
    *, job_id: str, name: str, arguments: dict[str, Any], caller: dict[str, Any]
) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    return {
        "type": CALL_TYPE,
        "request_id": request_id,
        "job_id": job_id,
        "name": name,
        "arguments": arguments,
        "caller": caller,
        "reply_key": reply_key(request_id),
    }


def _async_bus_client() -> aredis.Redis | None:
    """This event loop's client of the bus (one per loop: asyncio clients are bound to
    the loop they first ran on), or None without REDIS_URL."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = aredis.Redis.from_url(settings.REDIS_URL, **_client_options())
        _async_clients[loop] = client
    return client


def _client_options() -> dict[str, Any]:
    # A reply is awaited with a blocking pop as long as the call may run; the socket
    # must outwait it (redis-py's default read timeout is 5 s).
    return {
        "socket_connect_timeout": 2.0,
        "socket_timeout": settings.MATRIX_SANDBOX_CALL_HARD_CAP + REPLY_MARGIN + 10.0,
        "health_check_interval": 30,
        **pool_options(),
    }


def _no_answer(timeout: float) -> dict[str, Any]:
    return {
        "ok": False,
        "kind": "timeout",
        "error": f"the sandbox host did not answer within {timeout:g} s",
    }


def _bus_down(reason: str) -> dict[str, Any]:
    return {"ok": False, "kind": BUS_DOWN, "error": f"the bus is unavailable: {reason}"}
