"""Times as the API writes them."""

from __future__ import annotations

from datetime import datetime

RFC3339_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 UTC with second precision, as the original wrote job times."""
    return value.strftime(RFC3339_FORMAT) if value is not None else None
