"""The write limiter's counter under real concurrency: one upsert statement per hit, so
no hit is lost or counted twice and exactly ``limit`` pass (threads on their own
connections: real concurrent statements on PostgreSQL, the file database's lock on
SQLite)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.utils import timezone

from accounts import ratelimit
from accounts.models import RateCounter
from matrixcloud.errors import RateLimited

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_writes_each_count_once_and_the_limit_holds() -> None:
    """20 threads x 10 hits at once on one key (real concurrent statements): every hit
    is counted exactly once and exactly ``limit`` of them pass."""
    callers, hits, limit = 20, 10, 150
    now = timezone.now()
    gate = threading.Barrier(callers, timeout=60)

    def one(_: int) -> tuple[int, int]:
        passed = refused = 0
        try:
            gate.wait()
            for _ in range(hits):
                try:
                    ratelimit.rate_limit_hit("ip:198.51.100.99", limit, now=now)
                    passed += 1
                except RateLimited:
                    refused += 1
        finally:
            connections.close_all()
        return passed, refused

    with ThreadPoolExecutor(max_workers=callers) as pool:
        outcomes = list(pool.map(one, range(callers), timeout=60))
    assert sum(p for p, _ in outcomes) == limit
    assert sum(r for _, r in outcomes) == callers * hits - limit
    assert RateCounter.objects.get(key="ip:198.51.100.99").count == callers * hits
