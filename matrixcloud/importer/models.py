"""The importer's ledger: which rows of ours an import created, and from which source."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class ImportedRow(models.Model):
    """One row of ours that ``import_original`` created, and the source it came from.

    ``table`` is the report's table name, ``key`` the row's key as the importer looks it
    up (its id; ``<user>/<workspace>`` for a membership; a session's token hash, never
    the token), ``origin`` the source's fingerprint (`secretbox.SourceKey.fingerprint`).
    A re-import of the same source finds its own rows here; a row of ours the ledger does
    not give to that source is a collision, never joined or taken over. The record
    outlives the row, so a row removed here since is not imported again.
    """

    table = models.CharField(max_length=40)
    key = models.CharField(max_length=200)
    origin = models.CharField(max_length=64, db_index=True)
    imported_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["table", "key"], name="importer_row_once"),
        ]

    def __str__(self) -> str:
        return f"{self.table} {self.key} from {self.origin[:12]}"
