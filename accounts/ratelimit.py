"""Rate limits shared by every process (database-backed).

Writes are limited per client IP in fixed 60-second windows; failed sign-ins are
limited per account with an exponential back-off. Both answer 429 with Retry-After.
"""

from __future__ import annotations

import ipaddress
import math
import random
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import LoginThrottle, RateCounter
from matrixcloud.errors import RateLimited

WINDOW_SECONDS = 60
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 15 * 60
FAILURE_MEMORY = timedelta(hours=1)


def client_ip(request: HttpRequest) -> str:
    """The caller's address; ``X-Forwarded-For`` counts only from a trusted proxy."""
    peer = request.META.get("REMOTE_ADDR", "") or ""
    trusted = settings.MATRIX_TRUSTED_PROXIES
    forwarded = request.headers.get("X-Forwarded-For", "")
    if not (forwarded and trusted and _in_networks(peer, trusted)):
        return peer
    # Walk from the nearest hop back; the first untrusted address is the client.
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def api_write_check(request: HttpRequest) -> None:
    """``MATRIX_RUNTIME_RATE_LIMIT_RPM`` API writes per client IP per minute."""
    rate_limit_hit(f"ip:{client_ip(request)}", settings.MATRIX_RATE_LIMIT_RPM)


def _window_start(now: datetime) -> datetime:
    epoch = math.floor(now.timestamp() / WINDOW_SECONDS) * WINDOW_SECONDS
    return datetime.fromtimestamp(epoch, tz=now.tzinfo)


def rate_limit_hit(key: str, limit: int, now: datetime | None = None) -> None:
    """Count one request for ``key``; raise RateLimited once ``limit`` is passed."""
    if limit <= 0:
        return
    now = now or timezone.now()
    start = _window_start(now)
    count = _increment(key, start)
    if count > limit:
        retry = int((start + timedelta(seconds=WINDOW_SECONDS) - now).total_seconds()) + 1
        raise RateLimited(retry_after=max(retry, 1))
    if random.random() < 0.01:  # noqa: S311 - sampling, not security
        RateCounter.objects.filter(window_start__lt=now - timedelta(hours=1)).delete()


def _increment(key: str, start: datetime) -> int:
    """Add one to the window's count and return it: one upsert statement, one round trip
    (no transaction, no lost race: the row lock is held only for the statement)."""
    table = connection.ops.quote_name(RateCounter._meta.db_table)
    key_column, start_column, count_column = (
        connection.ops.quote_name(name) for name in ("key", "window_start", "count")
    )
    # The identifiers are the model's own, quoted; the values are parameters.
    sql = (
        f"INSERT INTO {table} ({key_column}, {start_column}, {count_column}) "  # noqa: S608
        f"VALUES (%s, %s, 1) ON CONFLICT ({key_column}, {start_column}) "
        f"DO UPDATE SET {count_column} = {table}.{count_column} + 1 RETURNING {count_column}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [key, connection.ops.adapt_datetimefield_value(start)])
        row = cursor.fetchone()
    return int(row[0])


def login_check(email: str, now: datetime | None = None) -> None:
    """Raise RateLimited while this account is in a back-off after failed sign-ins."""
    now = now or timezone.now()
    throttle = LoginThrottle.objects.filter(email=email).first()
    if throttle and throttle.locked_until and throttle.locked_until > now:
        wait = int((throttle.locked_until - now).total_seconds()) + 1
        raise RateLimited(
            "too many failed sign-ins for this account; retry later", retry_after=wait
        )


def login_failed(email: str, now: datetime | None = None) -> None:
    """Record a failed sign-in; past the allowance each failure doubles the wait."""
    now = now or timezone.now()
    with transaction.atomic():
        throttle, _ = LoginThrottle.objects.select_for_update().get_or_create(email=email)
        if now - throttle.last_failure_at > FAILURE_MEMORY:
            throttle.failures = 0
        throttle.failures += 1
        throttle.last_failure_at = now
        excess = throttle.failures - settings.LOGIN_FAILURES_BEFORE_BACKOFF
        if excess >= 0:
            wait = min(BACKOFF_BASE_SECONDS * (2**excess), BACKOFF_MAX_SECONDS)
            throttle.locked_until = now + timedelta(seconds=wait)
        throttle.save()


def login_succeeded(email: str) -> None:
    LoginThrottle.objects.filter(email=email).delete()
