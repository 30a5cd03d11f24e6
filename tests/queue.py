"""What sits in the django-q2 queue, whichever broker is configured (ORM or Redis)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django_q.brokers import get_broker
from django_q.models import OrmQ
from django_q.signing import SignedPackage


def queued_payloads() -> list[str]:
    """The signed task payloads, oldest first."""
    if settings.Q_CLUSTER.get("orm"):
        return [row.payload for row in OrmQ.objects.order_by("pk")]
    broker = get_broker()
    return [raw.decode() for raw in broker.connection.lrange(broker.list_key, 0, -1)]


def queued_tasks() -> list[dict[str, Any]]:
    """The decoded tasks (``func``, ``args``, ...), oldest first."""
    return [SignedPackage.loads(payload) for payload in queued_payloads()]


def purge() -> None:
    """Empty the queue (a Redis broker's queue is not rolled back with the test)."""
    get_broker().purge_queue()
