"""Shared fixtures."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def api() -> APIClient:
    """An API client on loopback (REMOTE_ADDR 127.0.0.1), sending JSON."""
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    client.default_format = "json"
    return client
