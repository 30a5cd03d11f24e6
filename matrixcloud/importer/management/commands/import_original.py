"""``manage.py import_original``: move a team from the original Go runtime to MatrixCloud.

``--sqlite PATH`` (the original's ``matrixcloud.db``) or ``--postgres URL`` with
``--schema`` (its ``MATRIXCLOUD_DB_SCHEMA``, ``matrixcloud`` by default). The original's
encryption key opens its provider secrets: ``--key-file``, else
``MATRIXCLOUD_ORIGINAL_SECRET_KEY``, else ``MATRIXCLOUD_SECRET_KEY``, else the
``secret.key`` beside the SQLite file; the key is required, as it also names the source.
Safe to run again: rows this source imported before are left as they are and reported
``unchanged`` (or ``kept`` when ours differs). A row that would join or take over a row
here that this source did not import is a collision: the report lists every one and the
import is refused. ``--dry-run`` prints the same report and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from matrixcloud.importer.errors import ImportFailed, ImportRefused
from matrixcloud.importer.secretbox import missing_key_message, resolve_key
from matrixcloud.importer.services import original_import
from matrixcloud.importer.source import Source, open_postgres, open_sqlite


class Command(BaseCommand):
    """Import the original's accounts, workspaces, models, runtimes, tokens, provider
    keys, usage and audit history (ids kept), in one transaction, refused on any
    collision with a row here that this source did not import."""

    help = "Import a matrix-runtime (original Go server) database into MatrixCloud."

    def add_arguments(self, parser: CommandParser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--sqlite", type=Path, help="the original's SQLite database file")
        where.add_argument("--postgres", metavar="URL", help="the original's PostgreSQL URL")
        parser.add_argument(
            "--schema", default="matrixcloud", help="its schema (default matrixcloud)"
        )
        parser.add_argument("--key-file", type=Path, help="the original's secret.key")
        parser.add_argument(
            "--dry-run", action="store_true", help="report what would change; write nothing"
        )
        parser.add_argument(
            "--skip-sessions",
            action="store_true",
            help="do not carry sign-in sessions (everyone signs in again)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        data_dir = options["sqlite"].absolute().parent if options["sqlite"] else None
        try:
            key = resolve_key(key_file=options["key_file"], data_dir=data_dir)
            with _opened(options) as source:
                if key is None:  # after opening: a source that is not the original's says so
                    raise ImportFailed(missing_key_message(data_dir))
                report = original_import(
                    source,
                    key=key,
                    dry_run=options["dry_run"],
                    carry_sessions=not options["skip_sessions"],
                )
        except ImportFailed as exc:
            if isinstance(exc, ImportRefused):
                for line in exc.lines:
                    self.stdout.write(line)
            raise CommandError(f"import_original: {exc}") from exc
        for line in report.lines():
            self.stdout.write(line)


@contextmanager
def _opened(options: dict[str, Any]) -> Iterator[Source]:
    if options["sqlite"]:
        with open_sqlite(options["sqlite"]) as sqlite_source:
            yield sqlite_source
    else:
        with open_postgres(options["postgres"], options["schema"]) as postgres_source:
            yield postgres_source
