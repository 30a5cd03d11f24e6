"""Rate limits shared by every process.

API writes are counted in fixed 60-second windows on the bus (``INCR``/``EXPIRE``, one
round trip; without ``REDIS_URL``, as in a process started alone, in this process's
memory). Who is counted:
- a caller whose credential this process has seen authenticate (a bearer token, or the
  console's session cookie) is counted by that credential: agents behind one address
  each have their own budget, and one agent is one budget from any address;
- any other write (anonymous, or a credential not proven yet, or a wrong one) is
  counted by the client's address, in the writes budget: guessing tokens costs the
  guesser's address, whatever it sends;
- tool calls (and matrixshell exec) have a budget of their own
  (``MATRIX_RUNTIME_TOOL_CALL_RATE_LIMIT_RPM``); a runtime's heartbeat is not counted
  once its credential is proven (:data:`UNMETERED`).
A write past its budget is answered 429 with Retry-After. (Failed sign-ins have a
throttle of their own, per account: ``accounts/throttle.py``.)
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import redis
import redis.asyncio as aredis
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from matrixcloud.errors import RateLimited
from matrixcloud.lib.addresses import client_ip
from matrixcloud.lib.bus import quick_client, quick_client_async

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# A credential seen to authenticate is trusted as the counting key this long.
PROVEN_FOR = 30.0
MAX_PROVEN = 10_000

WRITES = "writes"
CALLS = "calls"
# Paths with the tool-call budget.
CALL_PATHS = re.compile(r"^/v1/(?:sandbox/sessions/[^/]+/tools/call|matrixshell/exec)/?$")
# Paths a proven credential writes to without being counted (a runtime's liveness).
UNMETERED = re.compile(r"^/v1/cloud/runtimes/heartbeat/?$")


@dataclass(frozen=True)
class Meter:
    """What one write is counted against: a budget, a subject and the budget's limit."""

    budget: str
    subject: str
    limit: int

    def key(self, now: datetime) -> str:
        window = math.floor(now.timestamp() / WINDOW_SECONDS)
        return f"{settings.MATRIX_BUS_PREFIX}:rl:{self.budget}:{self.subject}:{window}"


def claimed_credential(request: HttpRequest) -> str:
    """A digest of the credential the request presents (the bearer token decides over a
    cookie, as authentication does), or "" for none. Only a digest is ever kept."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return credential_digest("bearer", token.strip())
    cookie = request.COOKIES.get(settings.SESSION_COOKIE_NAME, "")
    return credential_digest("cookie", cookie) if cookie else ""


def credential_digest(kind: str, value: str) -> str:
    return hashlib.blake2b(f"{kind}:{value}".encode(), digest_size=16).hexdigest()


_proven: dict[str, float] = {}


def credential_proven(request: HttpRequest) -> None:
    """The request's credential authenticated: count its next writes by it. Called for
    credentials checked outside DRF's authentication (a runtime's token)."""
    request.matrix_credential_proven = True  # type: ignore[attr-defined]


def _is_proven(digest: str) -> bool:
    until = _proven.get(digest)
    return until is not None and until > time.monotonic()


def write_meter(request: HttpRequest) -> Meter | None:
    """What this API write counts against, or None when it is not counted."""
    digest = claimed_credential(request)
    if digest and _is_proven(digest):
        if UNMETERED.match(request.path):
            return None
        if CALL_PATHS.match(request.path):
            limit = settings.MATRIX_TOOL_CALL_RATE_LIMIT_RPM
            return Meter(CALLS, f"cred:{digest}", limit) if limit > 0 else None
        limit = settings.MATRIX_RATE_LIMIT_RPM
        return Meter(WRITES, f"cred:{digest}", limit) if limit > 0 else None
    return address_meter(client_ip(request))


def address_meter(ip: str) -> Meter | None:
    """The writes budget of an address (callers with no proven credential)."""
    limit = settings.MATRIX_RATE_LIMIT_RPM
    return Meter(WRITES, f"ip:{ip}", limit) if limit > 0 else None


def call_meter(digest: str) -> Meter | None:
    """The tool-call budget of a proven credential (the fast route's callers)."""
    limit = settings.MATRIX_TOOL_CALL_RATE_LIMIT_RPM
    return Meter(CALLS, f"cred:{digest}", limit) if limit > 0 else None


def after_write(request: HttpRequest, status: int) -> None:
    """Learn from the answer: a credential that authenticated is counted by itself from
    now on; one that was refused (401) is forgotten."""
    digest = claimed_credential(request)
    if not digest:
        return
    if status == 401:
        _proven.pop(digest, None)
        return
    user = request.__dict__.get("user")  # set by DRF's authentication (never the lazy one)
    if isinstance(user, SimpleLazyObject):
        user = None
    authenticated = getattr(user, "is_authenticated", False) is True
    if getattr(request, "matrix_credential_proven", False) or (
        authenticated and not getattr(user, "is_local_dev", False)
    ):
        if len(_proven) >= MAX_PROVEN:
            _proven.clear()
        _proven[digest] = time.monotonic() + PROVEN_FOR


def api_write_check(request: HttpRequest) -> None:
    """Count one API write (see the module's docstring); RateLimited past its budget."""
    meter = write_meter(request)
    if meter is not None:
        meter_hit(meter)


async def api_write_check_async(request: HttpRequest) -> None:
    """:func:`api_write_check` on the event loop (the bus's asyncio client)."""
    meter = write_meter(request)
    if meter is not None:
        await meter_hit_async(meter)


def meter_hit(meter: Meter, now: datetime | None = None) -> None:
    """Count one request on ``meter``; raise RateLimited once its limit is passed."""
    now = now or timezone.now()
    _judge(meter, now, _count(meter.key(now)))


async def meter_hit_async(meter: Meter, now: datetime | None = None) -> None:
    now = now or timezone.now()
    _judge(meter, now, await _count_async(meter.key(now)))


def retry_after(now: datetime) -> int:
    """Seconds until the window holding ``now`` ends (at least 1)."""
    ends = (math.floor(now.timestamp() / WINDOW_SECONDS) + 1) * WINDOW_SECONDS
    return max(int(ends - now.timestamp()) + 1, 1)


def _judge(meter: Meter, now: datetime, count: int | None) -> None:
    if count is not None and count > meter.limit:
        raise RateLimited(retry_after=retry_after(now))


# --- the counters -------------------------------------------------------------------

_local: dict[str, tuple[int, float]] = {}
_local_lock = threading.Lock()


def _bus() -> redis.Redis | None:
    return quick_client(settings.REDIS_URL) if settings.REDIS_URL else None


def _bus_async() -> aredis.Redis | None:
    return quick_client_async(settings.REDIS_URL) if settings.REDIS_URL else None


def _count(key: str) -> int | None:
    """Add one to ``key``'s count and return it; None when the bus fails (not counted:
    a bus outage must not refuse every write, and it is logged)."""
    client = _bus()
    if client is None:
        return _count_here(key)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS + 5, nx=True)
            count, _ = pipe.execute()
    except (redis.RedisError, OSError):
        logger.warning("the bus is unavailable: this write is not rate limited", exc_info=True)
        return None
    return int(count)


async def _count_async(key: str) -> int | None:
    client = _bus_async()
    if client is None:
        return _count_here(key)
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS + 5, nx=True)
            count, _ = await pipe.execute()
    except (redis.RedisError, OSError):
        logger.warning("the bus is unavailable: this write is not rate limited", exc_info=True)
        return None
    return int(count)


def _count_here(key: str) -> int:
    """The in-process counter (no bus): one process's count, expired like the bus's."""
    now = time.monotonic()
    with _local_lock:
        if len(_local) > MAX_PROVEN:
            for stale in [name for name, (_, ends) in _local.items() if ends <= now]:
                del _local[stale]
        count, ends = _local.get(key, (0, now + WINDOW_SECONDS + 5))
        if ends <= now:
            count, ends = 0, now + WINDOW_SECONDS + 5
        _local[key] = (count + 1, ends)
        return count + 1


def counted(budget: str, subject: str, now: datetime | None = None) -> int:
    """What ``subject`` has spent of ``budget`` in the window holding ``now`` (tests)."""
    key = Meter(budget, subject, 0).key(now or timezone.now())
    client = _bus()
    if client is None:
        with _local_lock:
            count, ends = _local.get(key, (0, 0.0))
            return count if ends > time.monotonic() else 0
    value = client.get(key)
    return int(value) if value else 0


def forget_all() -> None:
    """Drop every count and every proven credential (tests start each from nothing)."""
    _proven.clear()
    with _local_lock:
        _local.clear()
    client = _bus()
    if client is not None:
        keys = list(client.scan_iter(match=f"{settings.MATRIX_BUS_PREFIX}:rl:*", count=1000))
        if keys:
            client.delete(*keys)
