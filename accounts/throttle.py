"""Failed sign-ins, limited per account with an exponential back-off (in the database).

Past the allowance (``MATRIX_RUNTIME_LOGIN_FAILURES``) each failure doubles the wait,
from 30 s up to 15 min; a locked account is answered 429 with Retry-After.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import LoginThrottle
from matrixcloud.errors import RateLimited

BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 15 * 60
FAILURE_MEMORY = timedelta(hours=1)


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
