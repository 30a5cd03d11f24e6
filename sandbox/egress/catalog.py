"""A session's allowlist: its catalog entry's egress, then what its request names.

Above the egress rules (``sandbox.egress``): it reads the catalog and knows how a start
command names its package (``sandbox.policy``, ``sandbox.prefetch``), which the rules
themselves need not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from django.conf import settings

from sandbox.egress import requested_check
from sandbox.policy import command_validate
from sandbox.prefetch import wanted_package


@cache
def _catalog_egress() -> dict[tuple[str, str], tuple[str, ...]]:
    """``(program, package) → egress`` of the catalog's sandboxed servers."""
    entries = json.loads(Path(settings.MATRIX_CATALOG_FILE).read_text())
    items = entries.get("items", entries) if isinstance(entries, dict) else entries
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for item in items if isinstance(items, list) else []:
        command, egress = item.get("start_command"), item.get("egress")
        if not command or not egress:
            continue
        wanted = wanted_package(command_validate(command))
        if wanted is not None:
            found[(wanted.spec.ecosystem, wanted.spec.name)] = tuple(egress)
    return found


def catalog_allow(argv: list[str]) -> list[str]:
    """The egress the catalog gives the server ``argv`` runs (matched by its package)."""
    wanted = wanted_package(argv)
    if wanted is None:
        return []
    return list(_catalog_egress().get((wanted.spec.ecosystem, wanted.spec.name), ()))


def session_allow(argv: list[str], requested: Iterable[str]) -> list[str]:
    """A session's allowlist: its catalog entry's and its request's, in order, once each."""
    return list(dict.fromkeys([*catalog_allow(argv), *requested_check(requested)]))
