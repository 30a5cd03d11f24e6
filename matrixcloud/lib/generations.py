"""Generation counters on the bus: how a process knows its cache of some facts is stale.

A process that caches a decision (who a bearer token is) keeps, with it, the counter's
value it read *before* it made the decision. Whatever could change the decision (a
token revoked, a user deactivated, a membership removed) bumps the counter after its
transaction commits. A cache entry is used only while the counter still reads as it did
when the entry was made; the check runs on the bus in the same round trip as the work
it guards (sandbox/rpc.py), so several web processes stay correct with no messages
between them. A bus that restarts loses the counter, which then reads differently from
every value kept, so every entry is dropped.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import transaction

from matrixcloud.lib.bus import quick_client, quick_client_async

logger = logging.getLogger(__name__)

CREDENTIALS = "credentials"


def generation_key(name: str) -> str:
    return f"{settings.MATRIX_BUS_PREFIX}:generation:{name}"


def _bus() -> redis.Redis | None:
    return quick_client(settings.REDIS_URL) if settings.REDIS_URL else None


def generation_read(name: str) -> str | None:
    """The counter as it reads now ("" when never bumped); None without a bus or when
    the bus fails (then nothing may be cached)."""
    client = _bus()
    if client is None:
        return None
    try:
        value = client.get(generation_key(name))
    except (redis.RedisError, OSError):
        logger.warning("could not read the %s generation", name, exc_info=True)
        return None
    return value.decode() if isinstance(value, bytes) else ""


async def generation_read_async(name: str) -> str | None:
    """:func:`generation_read` on the event loop (one client per loop)."""
    if not settings.REDIS_URL:
        return None
    try:
        value = await quick_client_async(settings.REDIS_URL).get(generation_key(name))
    except (redis.RedisError, OSError):
        logger.warning("could not read the %s generation", name, exc_info=True)
        return None
    return value.decode() if isinstance(value, bytes) else ""


def generation_bump(name: str) -> None:
    """Bump the counter once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: _bump_now(name))


def _bump_now(name: str) -> None:
    client = _bus()
    if client is None:
        return
    try:
        client.incr(generation_key(name))
    except (redis.RedisError, OSError):  # entries still expire on their own (fastcall TTL)
        logger.warning("could not bump the %s generation", name, exc_info=True)
