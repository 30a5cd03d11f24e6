"""The curated catalog of MCP servers and models, read from a JSON data file.

The file (``MATRIX_RUNTIME_CATALOG_FILE``, default ``models_registry/data/catalog.json``)
is ``{"items": [...]}``. It is validated whenever it is (re)loaded: every item has the
required keys with the right types, no unknown keys and a unique id. A broken file is
a 500 that names the file and the problem, never a crash. The parsed file is cached
until its modification time or size changes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from django.conf import settings

from matrixcloud.errors import ApplicationError

REQUIRED_STRINGS = (
    "id", "initials", "name", "kind", "kind_class", "runtime",
    "network", "source", "license", "desc",
)  # fmt: skip
REQUIRED_BOOLS = ("secrets", "verified", "sandbox")
# Omitted from the answer when empty, as the original did (docs/COMPATIBILITY.md#c-12).
OPTIONAL_STRINGS = ("transport", "start_command", "version")
# Ours, not the original's (never in the API's answer): the hosts a sandbox of the entry
# may reach through its egress proxy (sandbox/egress), and the command the console's
# launch runs where the original's start_command cannot work in a sandbox (git's
# `--repository /tmp`: a sandbox's /tmp is its own, empty).
INTERNAL_KEYS = ("egress", "launch_command")
KNOWN_KEYS = frozenset(REQUIRED_STRINGS + REQUIRED_BOOLS + OPTIONAL_STRINGS + INTERNAL_KEYS)

_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


class CatalogInvalid(ApplicationError):
    """The catalog data file is missing, unreadable or does not follow the format."""

    http_status = 500
    default_message = "the catalog file is invalid"


def _item_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "is not an object"
    unknown = sorted(set(item) - KNOWN_KEYS)
    if unknown:
        return f"has unknown keys {unknown}"
    for key in REQUIRED_STRINGS:
        if not isinstance(item.get(key), str) or not item[key].strip():
            return f"needs a non-empty string {key!r}"
    for key in REQUIRED_BOOLS:
        if not isinstance(item.get(key), bool):
            return f"needs a boolean {key!r}"
    for key in (*OPTIONAL_STRINGS, "launch_command"):
        if key in item and not isinstance(item[key], str):
            return f"has a non-string {key!r}"
    egress = item.get("egress", [])
    if not isinstance(egress, list) or not all(isinstance(host, str) for host in egress):
        return "has an 'egress' that is not a list of host names"
    return None


def validate_items(data: Any) -> list[dict[str, Any]]:
    """The items of a parsed catalog file; ``ValueError`` says what is wrong."""
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError('expected an object with an "items" list')
    seen: set[str] = set()
    for index, item in enumerate(items):
        problem = _item_problem(item)
        if problem:
            raise ValueError(f"item {index} {problem}")
        if item["id"] in seen:
            raise ValueError(f"duplicate id {item['id']!r}")
        seen.add(item["id"])
    return [_compact(item) for item in items]


def _compact(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in OPTIONAL_STRINGS or value}


def load_catalog(path: Path) -> list[dict[str, Any]]:
    """Read and validate the catalog at ``path``; :class:`CatalogInvalid` when it is broken."""
    try:
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        with _lock:
            cached = _cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        items = validate_items(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise CatalogInvalid(f"catalog file {path} is invalid: {exc}") from exc
    with _lock:
        _cache[path] = (stamp, items)
    return items


def catalog_items() -> list[dict[str, Any]]:
    """The catalog configured by ``MATRIX_CATALOG_FILE``."""
    return load_catalog(Path(settings.MATRIX_CATALOG_FILE))
