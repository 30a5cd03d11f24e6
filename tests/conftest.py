"""Shared fixtures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management.base import CommandError
from django.test.testcases import TransactionTestCase
from rest_framework.test import APIClient

FLUSH_TRIES = 5


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """A SQLite test database is a file in the test data dir, never Django's in-memory one:
    the processes tests start (servers, workers, hosts) open it by path."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and not database.get("TEST", {}).get("NAME"):
        database.setdefault("TEST", {})["NAME"] = str(
            Path(settings.MATRIX_DATA_DIR) / "test-db.sqlite3"
        )


@pytest.fixture
def api() -> APIClient:
    """An API client on loopback (REMOTE_ADDR 127.0.0.1), sending JSON."""
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    client.default_format = "json"
    return client


@pytest.fixture(scope="session", autouse=True)
def flush_outlasts_deadlocks() -> Iterator[None]:
    """A transactional test's teardown TRUNCATEs every table while the processes it
    started (sandbox hosts, workers) may still be writing their last rows; on
    PostgreSQL the two can deadlock and the server aborts one, sometimes the TRUNCATE.
    Retry the flush then (bounded): the aborted TRUNCATE changed nothing."""
    original = TransactionTestCase._fixture_teardown

    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(1, FLUSH_TRIES + 1):
            try:
                original(self)  # type: ignore[no-untyped-call]
                return
            except CommandError as exc:
                if attempt == FLUSH_TRIES or "deadlock detected" not in str(exc.__cause__):
                    raise
                time.sleep(0.2 * attempt)

    TransactionTestCase._fixture_teardown = teardown  # type: ignore[method-assign]
    yield
    TransactionTestCase._fixture_teardown = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def rate_limits_start_empty() -> None:
    """Each test's writes are counted from nothing: the limiter's counts live on the bus
    (or in this process without one), not in the database each test rolls back."""
    from matrixcloud.lib import ratelimit

    ratelimit.forget_all()
