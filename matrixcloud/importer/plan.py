"""What an import would do, row by row, and the report it prints.

The mapping (`matrixcloud.importer.mapping`) turns each source row into a
:class:`Target`: one row of ours as the source says it should be. Planning looks each
target up in our database: absent → ``created``; present and equal → ``unchanged``;
present but different → ``kept`` (ours is never overwritten: it may hold changes made
since, such as a password re-hashed at sign-in); another row of ours already holding one
of its unique keys → ``skipped`` with a note, or a refusal for accounts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.db import models

from accounts.services.identity import unique_slug
from matrixcloud.importer.errors import ImportFailed


class Action(StrEnum):
    CREATE = "created"
    UNCHANGED = "unchanged"
    KEPT = "kept"
    SKIPPED = "skipped"


LEGEND = (
    "  (unchanged: already here and the same; kept: already here but different, left as "
    "ours is; skipped: see the notes)"
)


class OnConflict(StrEnum):
    """What a unique key held by another row of ours means for a target."""

    SKIP = "skip"  # leave it out, with a note
    FAIL = "fail"  # refuse the whole import (accounts: the operator must decide)
    NEW_SLUG = "new_slug"  # a workspace whose slug is taken gets a fresh one


@dataclass
class Target:
    """One row of ours as the source says it should be.

    ``key`` finds an existing row; ``fields`` (attribute names) build a new one;
    ``volatile`` fields are set on creation but not compared (the live system moves them
    on, e.g. a session's idle expiry); ``unique`` lists the other unique keys.
    """

    table: str
    model: type[models.Model]
    key: dict[str, Any]
    fields: dict[str, Any]
    label: str
    volatile: frozenset[str] = frozenset()
    unique: tuple[dict[str, Any], ...] = ()
    on_conflict: OnConflict = OnConflict.SKIP


@dataclass
class Planned:
    """A target and what the import does with it."""

    target: Target
    action: Action


@dataclass
class ImportReport:
    """Per table, how many rows were (or would be) created, unchanged, kept or skipped;
    and notes on what was carried, changed on the way, or left behind."""

    source: str
    dry_run: bool
    tables: list[str]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, table: str, action: Action) -> int:
        return self.counts.get(table, Counter())[action.value]

    @property
    def created(self) -> int:
        return sum(c[Action.CREATE.value] for c in self.counts.values())

    def lines(self) -> list[str]:
        verb = "would import" if self.dry_run else "imported"
        lines = [f"{verb} from {self.source}:"]
        width = max(len(table) for table in self.tables)
        for table in self.tables:
            counts = self.counts.get(table, Counter())
            parts = ", ".join(f"{counts[a.value]} {a.value}" for a in Action)
            lines.append(f"  {table:<{width}}  {parts}")
        lines.append(LEGEND)
        lines.extend(f"- {note}" for note in self.notes)
        if self.dry_run:
            lines.append("dry run: nothing was written")
        return lines


def plan(targets: list[Target], notes: list[str]) -> list[Planned]:
    """Decide each target's action against our database (reads only)."""
    existing = _existing(targets)
    claimed: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
    planned = []
    for target, row in zip(targets, existing, strict=True):
        action = _action(target, row, claimed, notes)
        planned.append(Planned(target, action))
    return planned


def _action(
    target: Target,
    row: models.Model | None,
    claimed: set[tuple[str, frozenset[tuple[str, Any]]]],
    notes: list[str],
) -> Action:
    if row is not None:
        return Action.UNCHANGED if not _differences(target, row) else Action.KEPT
    for unique in target.unique:
        claim = (target.table, frozenset(unique.items()))
        taken = claim in claimed or target.model._default_manager.filter(**unique).exists()
        if not taken:
            claimed.add(claim)
            continue
        return _conflict(target, unique, notes)
    return Action.CREATE


def _conflict(target: Target, unique: dict[str, Any], notes: list[str]) -> Action:
    held = ", ".join(f"{name.split('__')[0]} {value!r}" for name, value in unique.items())
    if target.on_conflict is OnConflict.FAIL:
        raise ImportFailed(
            f"{target.label} cannot be imported: an existing {target.table[:-1]} already has "
            f"the {held}; rename or remove one of them first"
        )
    if target.on_conflict is OnConflict.NEW_SLUG:
        slug = unique_slug(str(target.fields["slug"]))
        notes.append(f"{target.label}: slug {target.fields['slug']!r} is taken; given {slug!r}")
        target.fields["slug"] = slug
        return Action.CREATE
    notes.append(f"{target.label} skipped: another {target.table[:-1]} already has the {held}")
    return Action.SKIPPED


def _differences(target: Target, row: models.Model) -> list[str]:
    return [
        name
        for name, value in target.fields.items()
        if name not in target.volatile and getattr(row, name) != value
    ]


def _existing(targets: list[Target]) -> list[models.Model | None]:
    """Each target's existing row (one query per table and key field where possible)."""
    found: list[models.Model | None] = []
    by_key: dict[tuple[type[models.Model], str], dict[Any, models.Model]] = {}
    for target in targets:
        if len(target.key) != 1:
            found.append(target.model._default_manager.filter(**target.key).first())
            continue
        ((name, value),) = target.key.items()
        cache_key = (target.model, name)
        if cache_key not in by_key:
            by_key[cache_key] = _bulk(target.model, name, targets)
        found.append(by_key[cache_key].get(value))
    return found


def _bulk(model: type[models.Model], name: str, targets: list[Target]) -> dict[Any, models.Model]:
    values = [t.key[name] for t in targets if t.model is model and list(t.key) == [name]]
    field_name = model._meta.pk.name if name == "pk" else name
    rows: dict[Any, models.Model] = {}
    for start in range(0, len(values), 500):
        rows.update(
            model._default_manager.in_bulk(values[start : start + 500], field_name=field_name)
        )
    return rows
