"""Reading the original's column values: RFC 3339 text, JSON text, 0/1 integers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

# The original wrote seconds, and nanoseconds in one place; Python reads microseconds.
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An empty expiry meant "never": a date no token outlives.
NEVER = datetime(2999, 12, 31, tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    """An aware datetime from the original's RFC 3339 text; None when empty or malformed."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        return None
    # In UTC, as the database gives it back (the audit chain hashes the ISO text).
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def time_or(value: Any, default: datetime) -> datetime:
    return parse_time(value) or default


def parse_json(value: Any, default: Any) -> Any:
    """The decoded ``*_json`` column (NUL in its strings as U+FFFD), or ``default`` when
    empty, ``null`` or malformed."""
    try:
        decoded = json.loads(value) if value else None
    except (TypeError, ValueError):
        return default
    return default if decoded is None else _without_nul(decoded)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def text(value: Any, limit: int) -> str:
    """The column as text of at most ``limit`` characters; NUL (which PostgreSQL refuses)
    becomes U+FFFD."""
    return _without_nul(str(value or ""))[:limit]


def integer(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
