"""The web lane's connection trust (matrixcloud/lib/lanes.py): a connection whose last
query succeeded less than ``TRUSTED_FOR`` seconds ago skips the next request's health
check (a ``SELECT 1`` round trip on PostgreSQL); an older one, or one whose query
failed, is checked as Django checks it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import DatabaseError, close_old_connections, connection

from matrixcloud.lib import lanes

pytestmark = pytest.mark.django_db


def next_request() -> bool:
    """What a lane request's start decides: whether the health check is skipped."""
    close_old_connections()  # request_started: Django resets the check
    lanes._trust_recent_connections()
    return bool(connection.health_check_done)


@pytest.fixture(autouse=True)
def watched() -> Iterator[None]:
    """The test's connection watched as a lane thread's is, for this test only."""
    lanes.watch_queries(connection)
    connection.worked_at = None
    yield
    connection.execute_wrappers.remove(lanes._note_success)
    connection.worked_at = None


def served_a_request() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_a_connection_that_just_worked_is_not_checked_again() -> None:
    served_a_request()
    assert next_request() is True


def test_a_connection_idle_longer_than_the_trust_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served_a_request()
    later = time.monotonic() + lanes.TRUSTED_FOR + 0.5
    monkeypatch.setattr(lanes.time, "monotonic", lambda: later)
    assert next_request() is False


def test_a_failed_query_earns_no_trust() -> None:
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_at_all")
    assert connection.worked_at is None
    assert next_request() is False


def test_a_connection_that_only_idled_is_not_trusted() -> None:
    with connection.cursor():  # opened, no query run
        pass
    assert next_request() is False
