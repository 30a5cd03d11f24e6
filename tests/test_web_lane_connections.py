"""The web lane's connection trust (matrixcloud/lib/lanes.py): a connection that served a
request without error less than ``TRUSTED_FOR`` seconds ago skips the next request's
health check (a ``SELECT 1`` round trip on PostgreSQL); an older one, or one that saw a
database error, is checked as Django checks it."""

from __future__ import annotations

import time

import pytest
from django.db import DatabaseError, close_old_connections, connection

from matrixcloud.lib import lanes

pytestmark = pytest.mark.django_db


def next_request() -> bool:
    """What a lane request's start decides: whether the health check is skipped."""
    close_old_connections()  # request_started: Django resets the check
    lanes._trust_recent_connections()
    return bool(connection.health_check_done)


def served_a_request() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    lanes._note_working_connections()


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


def test_a_connection_that_saw_a_database_error_is_not_trusted() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.worked_at = None  # never served a request cleanly
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_at_all")
    assert connection.errors_occurred
    lanes._note_working_connections()
    assert connection.worked_at is None
    assert next_request() is False
