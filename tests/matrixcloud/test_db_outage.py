"""A database that cannot be reached is a 503 in the error shape (retryable), not a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from matrixcloud.lib.bus import free_port
from tests.factories import bearer, signup

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE = {"error": "database unavailable", "status": 503}


@pytest.fixture
def database_down() -> Iterator[None]:
    """The default connection points nowhere (a closed port, or a SQLite file that
    cannot be opened) until the test ends; put back in this fixture's own teardown,
    before anything after the test reads the database."""
    conn = connections["default"]
    conn.close()
    key, nowhere = (
        ("PORT", str(free_port()))
        if conn.vendor == "postgresql"
        else ("NAME", "/nonexistent/matrixcloud.sqlite3")
    )
    saved = conn.settings_dict[key]
    conn.settings_dict[key] = nowhere
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict[key] = saved


@pytest.fixture
def token() -> str:
    return signup("Outage", "outage@db.test")[2]


def test_a_read_during_a_database_outage_is_a_503(
    api: Any, token: str, database_down: None, settings: Any
) -> None:
    response = api.get("/v1/jobs", **bearer(token))
    assert (response.status_code, response.json()) == (503, OUTAGE)
    assert response["Retry-After"] == "1"


def test_a_write_during_a_database_outage_is_a_503(
    api: Any, token: str, database_down: None, settings: Any
) -> None:
    settings.MATRIX_RATE_LIMIT_RPM = 120  # the limiter counts on the bus: authentication fails
    response = api.post("/v1/jobs", {"type": "test.echo"}, **bearer(token))
    assert (response.status_code, response.json()) == (503, OUTAGE)
    settings.MATRIX_RATE_LIMIT_RPM = 0  # and without the limiter the same way
    response = api.post("/v1/jobs", {"type": "test.echo"}, **bearer(token))
    assert (response.status_code, response.json()) == (503, OUTAGE)
