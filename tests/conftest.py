"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient


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
