"""``original_import``: one source read in full, planned, then written in one transaction.

Read-only on the source. Everything that can refuse the import (the schema, the key, a
provider secret it does not open, a collision with a row here that this source did not
import) is checked before the first write, and the writes share one transaction, so a
failure leaves our database as it was. Each row created is recorded in the ledger
(`models.ImportedRow`) under the source's fingerprint, so that a re-import of the same
source finds its rows and another source never claims them. Audit rows are appended to
our hash chain in the original's order with their ids, times and content; a summary row
records the import itself when it created anything.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from django.db import DatabaseError, models, transaction
from django.utils import timezone

from accounts.audit import audit_record, chain_advance, chain_link
from accounts.models import AuditChainHead, AuditEvent
from matrixcloud.importer.errors import ImportFailed, ImportRefused
from matrixcloud.importer.mapping import TABLES, Context, targets
from matrixcloud.importer.models import ImportedRow
from matrixcloud.importer.plan import Action, ImportReport, Planned, Planner, Ref
from matrixcloud.importer.secretbox import SourceKey
from matrixcloud.importer.source import TABLES as SOURCE_TABLES
from matrixcloud.importer.source import Source

CARRIED = (
    "passwords: users sign in with their original password (re-hashed with Argon2id at "
    "their first sign-in)",
    "join tokens and runtime tokens: carried as the same SHA-256 hashes; unused join "
    "secrets still register, runtimes keep heart-beating with their tokens",
)
SESSIONS_CARRIED = "sessions: carried (SHA-256 of the same token); users stay signed in"
SESSIONS_DROPPED = "sessions: not imported (--skip-sessions); every user must sign in again"
ORIGIN_NOTE = (
    "source fingerprint {origin}… (from the original's key): the rows it created are "
    "recorded under it; a re-import with the same key finds them"
)
ACTOR = "operator"
BATCH = 500


def original_import(
    source: Source,
    *,
    key: SourceKey,
    dry_run: bool = False,
    carry_sessions: bool = True,
) -> ImportReport:
    """Import ``source`` into our database (or only report what would change).

    Raises `ImportRefused` (nothing written) when any row collides."""
    data = {table: source.rows(table) for table in SOURCE_TABLES}
    origin = key.fingerprint
    report = ImportReport(source=source.label, dry_run=dry_run, tables=TABLES)
    with transaction.atomic():
        now = timezone.now()
        context = Context(data, key=key, now=now, carry_sessions=carry_sessions)
        planner = Planner(_ledger(origin), report.notes)
        planned = planner.plan(targets(context))
        report.collisions = planner.collisions
        report.notes.extend(context.notes)
        report.notes.extend([*CARRIED, SESSIONS_CARRIED if carry_sessions else SESSIONS_DROPPED])
        report.notes.append(ORIGIN_NOTE.format(origin=origin[:16]))
        for item in planned:
            report.counts.setdefault(item.target.table, Counter())[item.action.value] += 1
        if report.collisions and not dry_run:
            raise ImportRefused(report.refusal(), report.lines())
        if not dry_run:
            try:
                _write(planned)
                _record(planned, origin, now)
            except DatabaseError as exc:  # raised out of the block: everything rolls back
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ImportFailed(
                    f"our database refused a row ({reason}); nothing was imported"
                ) from exc
            if report.created:
                _audit_import(report, origin)
    return report


def _ledger(origin: str) -> set[Ref]:
    """The rows earlier imports of this source created."""
    return set(ImportedRow.objects.filter(origin=origin).values_list("table", "key"))


def _record(planned: list[Planned], origin: str, now: datetime) -> None:
    """Give each row created to this source in the ledger (a row imported before, removed
    here since and created again changes hands to the source that made it now)."""
    refs = [item.target.ref for item in planned if item.action is Action.CREATE]
    rows = [ImportedRow(table=t, key=k, origin=origin, imported_at=now) for t, k in refs]
    ImportedRow.objects.bulk_create(
        rows,
        BATCH,
        update_conflicts=True,
        unique_fields=["table", "key"],
        update_fields=["origin", "imported_at"],
    )


def _write(planned: list[Planned]) -> None:
    """Insert every planned row, table by table in the mapping's order (references
    first), in batches."""
    batches: dict[type[models.Model], list[dict[str, Any]]] = {}
    for item in planned:
        if item.action is Action.CREATE:
            batches.setdefault(item.target.model, []).append(item.target.fields)
    for model, rows in batches.items():
        if model is AuditEvent:
            _append_audit(rows)
        else:
            _create(model, rows)


def _create(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    created = model._default_manager.bulk_create([model(**fields) for fields in rows], BATCH)
    # auto_now_add fields ignore the value given; the original's time is put back.
    stamped = [
        field.attname
        for field in model._meta.concrete_fields
        if getattr(field, "auto_now_add", False)
    ]
    for row, fields in zip(created, rows, strict=True):
        if stamped:
            model._default_manager.filter(pk=row.pk).update(**{f: fields[f] for f in stamped})


def _append_audit(rows: list[dict[str, Any]]) -> None:
    """Append the original's audit rows to our chain in their order, with their ids and
    times, hashed as ``accounts.audit.audit_record`` hashes (one lock on the head)."""
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
    events = [AuditEvent(**fields) for fields in rows]
    last_hash = chain_link(head, events)
    AuditEvent.objects.bulk_create(events, BATCH)  # seq follows the list's order
    chain_advance(head, last_hash, len(events))


def _audit_import(report: ImportReport, origin: str) -> None:
    audit_record(
        action="original.imported",
        actor=ACTOR,
        target=report.source[:300],
        meta={
            "origin": origin,
            "created": {table: report.count(table, Action.CREATE) for table in report.tables},
            "kept": {table: report.count(table, Action.KEPT) for table in report.tables},
        },
    )
