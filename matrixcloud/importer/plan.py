"""What an import would do, row by row, and the report it prints.

The mapping (`matrixcloud.importer.mapping`) turns each source row into a
:class:`Target`: one row of ours as the source says it should be. Planning looks each
target up in our database and in the import ledger (`models.ImportedRow`, the rows
earlier imports of this same source created): absent → ``created``; present, this
source's, and equal → ``unchanged``; this source's but different, or removed here since
→ ``kept`` (ours is never overwritten: it may hold changes made since, such as a
password re-hashed at sign-in, or a runtime an Owner removed). Another row of ours
holding one of its soft unique keys → ``skipped`` with a note (or a fresh slug for a
workspace).

Everything else that would make an imported row join or take over a row here is a
collision (``collided``): a row already here that this source did not import (a
workspace, user, membership, session, audit row... with its id or key), a row that
joins a workspace or user that is not this source's (a membership, a session, a
runtime, a key, a model...), an email or a token another row here already holds. Any
collision refuses the whole import; ``--dry-run`` lists them all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.db import models

from accounts.models import AuditEvent, Workspace
from accounts.services.identity import unique_slug

Ref = tuple[str, str]  # (table, key): a row as the ledger records it
LISTED_PER_TABLE = 20  # collisions named per table in the report; the rest counted


class Action(StrEnum):
    CREATE = "created"
    UNCHANGED = "unchanged"
    KEPT = "kept"
    SKIPPED = "skipped"
    COLLIDED = "collided"


LEGEND = (
    "  (unchanged: already here from this source and the same; kept: from this source but "
    "different or removed here, left as ours is; skipped: see the notes; collided: would "
    "join or take over a row here that this source did not import, see below)"
)


class OnConflict(StrEnum):
    """What a unique key held by another row of ours means for a target."""

    SKIP = "skip"  # leave it out, with a note
    COLLIDE = "collide"  # an identity (an email, a token): a collision, the import refused
    NEW_SLUG = "new_slug"  # a workspace whose slug is taken gets a fresh one


@dataclass
class Target:
    """One row of ours as the source says it should be.

    ``key`` finds an existing row; ``fields`` (attribute names) build a new one;
    ``volatile`` fields are set on creation but not compared (the live system moves them
    on, e.g. a session's idle expiry); ``unique`` lists the other unique keys.
    ``owners`` are the rows it joins (its workspace, its user): each must be this
    source's. ``optional`` names a field that only points at a row (a creator, a
    profile): left empty when that row is not this source's.
    """

    table: str
    model: type[models.Model]
    key: dict[str, Any]
    fields: dict[str, Any]
    label: str
    volatile: frozenset[str] = frozenset()
    unique: tuple[dict[str, Any], ...] = ()
    on_conflict: OnConflict = OnConflict.SKIP
    owners: tuple[Ref, ...] = ()
    optional: dict[str, Ref] = field(default_factory=dict)

    @property
    def ref(self) -> Ref:
        return (self.table, "/".join(str(value) for value in self.key.values()))


@dataclass
class Planned:
    """A target and what the import does with it."""

    target: Target
    action: Action


@dataclass(frozen=True)
class Collision:
    """A source row that would join or take over a row here; named without secrets."""

    table: str
    label: str
    reason: str

    def __str__(self) -> str:
        return f"{self.label}: {self.reason}"


@dataclass
class ImportReport:
    """Per table, how many rows were (or would be) created, unchanged, kept, skipped or
    collided; notes on what was carried, changed on the way, or left behind; and each
    collision."""

    source: str
    dry_run: bool
    tables: list[str]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)

    def count(self, table: str, action: Action) -> int:
        return self.counts.get(table, Counter())[action.value]

    @property
    def created(self) -> int:
        return sum(c[Action.CREATE.value] for c in self.counts.values())

    def lines(self) -> list[str]:
        verb = "would import" if self.dry_run else "imported"
        if self.collisions and not self.dry_run:
            verb = "refused to import"
        lines = [f"{verb} from {self.source}:"]
        width = max(len(table) for table in self.tables)
        for table in self.tables:
            counts = self.counts.get(table, Counter())
            parts = ", ".join(f"{counts[a.value]} {a.value}" for a in Action)
            lines.append(f"  {table:<{width}}  {parts}")
        lines.append(LEGEND)
        lines.extend(f"- {note}" for note in self.notes)
        lines.extend(self._collision_lines())
        if self.dry_run:
            lines.append("dry run: nothing was written")
        elif self.collisions:
            lines.append("import refused: nothing was written")
        return lines

    def refusal(self) -> str:
        """The one-paragraph reason the import is refused (the command's error)."""
        named = "; ".join(str(c) for c in self.collisions[:LISTED_PER_TABLE])
        more = len(self.collisions) - LISTED_PER_TABLE
        return (
            f"refused: {len(self.collisions)} rows of the source collide with rows here that "
            f"it did not import ({named}{f'; and {more} more' if more > 0 else ''}); "
            "nothing was imported. The report lists them all (--dry-run shows it without "
            "trying); remove or rename them in the source, or import it elsewhere."
        )

    def _collision_lines(self) -> list[str]:
        if not self.collisions:
            return []
        outcome = "would refuse the import" if self.dry_run else "refuse the import"
        lines = [
            f"collisions: {len(self.collisions)} rows would join or take over rows here "
            f"that this source did not import; they {outcome}:"
        ]
        by_table: dict[str, list[Collision]] = {}
        for collision in self.collisions:
            by_table.setdefault(collision.table, []).append(collision)
        for table, found in by_table.items():
            lines.extend(f"  {table}: {c}" for c in found[:LISTED_PER_TABLE])
            if len(found) > LISTED_PER_TABLE:
                lines.append(f"  {table}: and {len(found) - LISTED_PER_TABLE} more")
        return lines


class Planner:
    """Decides each target's action against our database and the ledger (reads only).

    ``ledger`` holds the rows earlier imports of this same source created; ``theirs``
    what this run has decided so far: for each planned row, whether it is the source's
    to write into (created now, or already here from it).
    """

    def __init__(self, ledger: set[Ref], notes: list[str]) -> None:
        self.ledger = ledger
        self.notes = notes
        self.theirs: dict[Ref, bool] = {}
        self.claimed: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
        self.collisions: list[Collision] = []
        self.emptied: Counter[str] = Counter()
        self.removed: Counter[str] = Counter()
        self.gone: set[Ref] = set()  # imported before, removed here since

    def plan(self, targets: list[Target]) -> list[Planned]:
        existing = _existing(targets)
        planned = []
        for target, row in zip(targets, existing, strict=True):
            action = self._action(target, row)
            if target.ref not in self.theirs:  # a duplicate keeps the first decision
                here = action in (Action.CREATE, Action.UNCHANGED, Action.KEPT)
                self.theirs[target.ref] = here and target.ref not in self.gone
            planned.append(Planned(target, action))
        self.notes.extend(f"{count} {what} (left empty)" for what, count in self.emptied.items())
        self.notes.extend(f"{count} {what} (not imported)" for what, count in self.removed.items())
        return planned

    def is_theirs(self, ref: Ref) -> bool:
        return self.theirs.get(ref, ref in self.ledger)

    def _action(self, target: Target, row: models.Model | None) -> Action:
        if target.ref in self.theirs:
            return self._collide(target, "appears more than once in the source")
        refused = self._joins(target)
        if refused is not None:
            return refused
        self._empty_foreign(target)
        if row is not None:
            if target.ref not in self.ledger:
                return self._collide(target, "already here, and not imported from this source")
            return Action.UNCHANGED if not _differences(target, row) else Action.KEPT
        if target.ref in self.ledger:  # imported before, removed here since: ours to keep so
            self.removed[f"{target.table} imported before and removed here since"] += 1
            self.gone.add(target.ref)
            return Action.KEPT
        if target.model is Workspace and _leftovers_name(target.key.get("pk")):
            return self._collide(
                target, "the id of a workspace removed here, whose audit history remains"
            )
        for unique in target.unique:
            claim = (target.table, frozenset(unique.items()))
            taken = claim in self.claimed or target.model._default_manager.filter(**unique).exists()
            if not taken:
                self.claimed.add(claim)
                continue
            return self._conflict(target, unique)
        return Action.CREATE

    def _joins(self, target: Target) -> Action | None:
        """Skipped or collided when a row it joins is not the source's to write into."""
        for owner in target.owners:
            what, key = owner
            if owner in self.gone:
                self.removed[f"{target.table} of a {what[:-1]} removed here since"] += 1
                return Action.SKIPPED
            if not self.is_theirs(owner):
                return self._collide(target, f"its {what[:-1]} {key} is not this source's")
        return None

    def _empty_foreign(self, target: Target) -> None:
        for name, ref in target.optional.items():
            if not self.is_theirs(ref):
                target.fields[name] = None
                self.emptied[f"{target.table} naming a {ref[0][:-1]} not of this source"] += 1

    def _collide(self, target: Target, reason: str) -> Action:
        self.collisions.append(Collision(target.table, target.label, reason))
        return Action.COLLIDED

    def _conflict(self, target: Target, unique: dict[str, Any]) -> Action:
        held = _held(unique)
        singular = target.table[:-1]
        if target.on_conflict is OnConflict.COLLIDE:
            return self._collide(target, f"another {singular} here already has {held}")
        if target.on_conflict is OnConflict.NEW_SLUG:
            slug = unique_slug(str(target.fields["slug"]))
            self.notes.append(
                f"{target.label}: slug {target.fields['slug']!r} is taken; given {slug!r}"
            )
            target.fields["slug"] = slug
            return Action.CREATE
        self.notes.append(f"{target.label} skipped: another {singular} already has {held}")
        return Action.SKIPPED


def _leftovers_name(workspace_id: Any) -> bool:
    """Whether rows that outlive a workspace (its audit trail) still name this id: a
    source may not take the id over and read them."""
    return (
        workspace_id is not None and AuditEvent.objects.filter(workspace_id=workspace_id).exists()
    )


def _held(unique: dict[str, Any]) -> str:
    """What a unique key holds, for a message: a token hash is named, never shown."""
    parts = []
    for name, value in unique.items():
        column = name.split("__")[0]
        parts.append("its token" if "hash" in column else f"the {column} {value!r}")
    return ", ".join(parts)


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
