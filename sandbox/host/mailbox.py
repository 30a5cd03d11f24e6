"""A host's end of the sandbox RPC: its call mailbox on the bus (see sandbox/rpc.py).

Requests are popped with a bounded ``BLPOP`` (so the host notices a stop within a
second); replies are pushed to the caller's reply list, which expires if nobody takes
it. On shutdown the requests still waiting are answered ``ended``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aredis
from django.conf import settings

from matrixcloud.lib.bus import pool_options
from sandbox.rpc import KEY_TTL, REPLY_TYPE, mailbox_key

logger = logging.getLogger(__name__)

TAKE_TIMEOUT = 1.0


class Mailbox:
    """The Redis list this host takes tool calls from, and where it puts the answers."""

    def __init__(self, runner: str, *, url: str | None = None) -> None:
        self.key = mailbox_key(runner)
        self.redis = aredis.Redis.from_url(
            url or settings.REDIS_URL,
            socket_connect_timeout=2.0,
            socket_timeout=TAKE_TIMEOUT + 10.0,  # outwaits the blocking pop in take()
            health_check_interval=30,
            **pool_options(),
        )

    async def take(self, timeout: float = TAKE_TIMEOUT) -> dict[str, Any] | None:
        """The next request, or None after ``timeout`` s (or for one that is not JSON)."""
        popped = await self.redis.blpop([self.key], timeout=timeout)
        if popped is None:
            return None
        try:
            message = json.loads(popped[1])
        except ValueError:
            logger.warning("dropped a call request that is not JSON")
            return None
        return message if isinstance(message, dict) else None

    async def reply(self, message: dict[str, Any], body: dict[str, Any]) -> None:
        """Answer ``message`` (a request taken from the mailbox) with ``body``."""
        key = message.get("reply_key")
        if not isinstance(key, str) or not key.startswith(f"{settings.MATRIX_BUS_PREFIX}:"):
            return
        reply = {"type": REPLY_TYPE, "request_id": message.get("request_id"), **body}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(reply, separators=(",", ":"), default=str))
            pipe.expire(key, KEY_TTL)
            await pipe.execute()

    async def drain(self) -> list[dict[str, Any]]:
        """Take every request still waiting (at shutdown, to answer them)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self.key, 0, -1)
            pipe.delete(self.key)
            raw, _ = await pipe.execute()
        waiting = []
        for item in raw:
            try:
                waiting.append(json.loads(item))
            except ValueError:
                continue
        return [message for message in waiting if isinstance(message, dict)]

    async def close(self) -> None:
        await self.redis.aclose()
