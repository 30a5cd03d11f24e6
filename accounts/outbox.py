"""The account email outbox: rows ``accounts.emails.email_queue`` wrote, delivered by
the worker's sweep (``AccountsConfig.sweep``) as soon as a wake says there is one, and
every few seconds anyway.

Each row is leased before it is sent (a conditional update of ``due_at``), so two
workers never send it both; a worker that dies mid-send leaves the lease to lapse and
the row is sent again (at least once, never lost). A failed send is tried again after
a doubling pause, :data:`MAX_ATTEMPTS` times in all.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import F
from django.utils import timezone

from accounts.emails import RESET_REQUEST, email_send
from accounts.models import OutboxEmail

logger = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)
RETRY_FIRST = timedelta(seconds=10)
MAX_ATTEMPTS = 5
BATCH = 50


def outbox_deliver(now: datetime | None = None) -> int:
    """Send what is due (at most :data:`BATCH` rows); the number sent."""
    now = now or timezone.now()
    due = OutboxEmail.objects.filter(due_at__lte=now).order_by("due_at", "pk")
    sent = 0
    for pk in list(due.values_list("pk", flat=True)[:BATCH]):
        leased = OutboxEmail.objects.filter(pk=pk, due_at__lte=now).update(
            due_at=now + LEASE, attempts=F("attempts") + 1
        )
        row = OutboxEmail.objects.filter(pk=pk).first() if leased == 1 else None
        if row is None:
            continue  # another worker has it
        try:
            _deliver(row)
        except Exception:  # the mail server refused or is down: again later
            _failed(row, now)
            continue
        row.delete()
        sent += 1
    return sent


def _deliver(row: OutboxEmail) -> None:
    if row.kind == RESET_REQUEST:
        from accounts.services.passwords import password_reset_issue

        password_reset_issue(email=row.to, ip=row.ip)
        return
    email_send(
        row.kind, to=row.to, secret=row.secret, name=row.name, workspace_name=row.workspace_name
    )


def _failed(row: OutboxEmail, now: datetime) -> None:
    if row.attempts >= MAX_ATTEMPTS:
        logger.exception(
            "gave up on the %s email %s after %s tries", row.kind, row.pk, row.attempts
        )
        row.delete()
        return
    logger.warning("the %s email %s failed (try %s)", row.kind, row.pk, row.attempts, exc_info=True)
    pause = RETRY_FIRST * 2 ** (row.attempts - 1)
    OutboxEmail.objects.filter(pk=row.pk).update(due_at=now + pause)
