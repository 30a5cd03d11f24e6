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
from django.db import IntegrityError, transaction
from django.db.models import F
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
    for _ in range(3):
        with transaction.atomic():
            rows = RateCounter.objects.filter(key=key, window_start=start)
            if rows.update(count=F("count") + 1):
                return rows.values_list("count", flat=True).get()
            try:
                with transaction.atomic():
                    RateCounter.objects.create(key=key, window_start=start, count=1)
                return 1
            except IntegrityError:
                continue  # another process created it first: count on that row
    raise RateLimited("rate limiter is contended; retry", retry_after=1)


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
