"""Reading the original's database (SQLite file or PostgreSQL schema), read-only.

The tables and columns are the original's (docs/COMPATIBILITY.md#c-16). A source that lacks any
of them is refused before anything is read, naming what is missing. SQLite is opened
with ``mode=ro``; PostgreSQL in a read-only session, with the schema named (the
original's ``MATRIXCLOUD_DB_SCHEMA``, ``matrixcloud`` by default).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from matrixcloud.importer.errors import ImportFailed

TABLES: dict[str, tuple[str, ...]] = {
    "workspaces": ("id", "name", "slug", "created_at"),
    "users": ("id", "workspace_id", "name", "email", "password_hash", "role", "created_at"),
    "sessions": ("token", "user_id", "created_at", "expires_at"),
    "model_profiles": (
        "id", "workspace_id", "source_type", "source_uri", "provider", "external_id",
        "display_name", "task", "library", "license", "tags_json", "metadata_json", "status",
        "created_at", "updated_at",
    ),
    "model_runtime_installations": (
        "id", "workspace_id", "model_profile_id", "runtime_id", "install_mode",
        "serving_engine", "status", "progress", "local_path", "endpoint_url", "job_id",
        "created_at", "updated_at",
    ),
    "runtimes": (
        "id", "workspace_id", "name", "mode", "kind", "url", "hf_space", "region", "caps_json",
        "status", "token_hash", "version", "last_seen_at", "created_at", "updated_at",
    ),
    "runtime_join_tokens": (
        "id", "workspace_id", "token_hash", "label", "created_by", "max_uses", "uses",
        "revoked", "expires_at", "created_at",
    ),
    "provider_credentials": (
        "id", "workspace_id", "provider", "label", "secret_enc", "hint", "meta_json",
        "created_by", "created_at", "updated_at",
    ),
    "usage_events": (
        "id", "workspace_id", "user_id", "runtime_id", "kind", "quantity", "meta_json",
        "created_at",
    ),
    "password_resets": ("id", "user_id", "token_hash", "expires_at", "used_at", "created_at"),
    "email_verifications": (
        "id", "user_id", "token_hash", "expires_at", "used_at", "created_at",
    ),
    "audit_events": (
        "id", "workspace_id", "actor", "action", "target", "ip", "status", "meta_json",
        "created_at",
    ),
}  # fmt: skip

# The order rows are read in; audit rows in the order they were written.
ORDER = {"audit_events": "created_at, {tiebreak}"}

Row = dict[str, Any]


class Source(Protocol):
    """An opened original database: its tables as lists of column → value."""

    label: str

    def rows(self, table: str) -> list[Row]: ...


def redact(url: str) -> str:
    """A database URL without its password (for messages and the audit log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _check_schema(label: str, found: dict[str, set[str]]) -> None:
    missing_tables = [table for table in TABLES if table not in found]
    if missing_tables:
        raise ImportFailed(
            f"{label} is not the original's database: it has no table "
            f"{', '.join(missing_tables)} (expected matrix-runtime's tables: "
            f"{', '.join(TABLES)})"
        )
    for table, columns in TABLES.items():
        absent = [column for column in columns if column not in found[table]]
        if absent:
            raise ImportFailed(
                f"{label} is not the original's database: table {table} has no column "
                f"{', '.join(absent)}"
            )


class SQLiteSource:
    """The original's SQLite file, opened read-only."""

    def __init__(self, connection: sqlite3.Connection, label: str) -> None:
        self.connection = connection
        self.label = label

    def rows(self, table: str) -> list[Row]:
        columns = ", ".join(f'"{column}"' for column in TABLES[table])
        order = ORDER.get(table, "rowid").format(tiebreak="rowid")
        cursor = self.connection.execute(f'SELECT {columns} FROM "{table}" ORDER BY {order}')  # noqa: S608  (names from TABLES)
        return [dict(zip(TABLES[table], row, strict=True)) for row in cursor]

    def columns(self) -> dict[str, set[str]]:
        tables = [
            name
            for (name,) in self.connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        return {
            table: {row[1] for row in self.connection.execute(f'PRAGMA table_info("{table}")')}
            for table in tables
            if table in TABLES
        }


@contextmanager
def open_sqlite(path: Path) -> Iterator[SQLiteSource]:
    """The original's SQLite database at ``path``, read-only and schema-checked."""
    if not path.is_file():
        raise ImportFailed(f"no SQLite database at {path}")
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise ImportFailed(f"cannot open {path} read-only: {exc}") from exc
    try:
        source = SQLiteSource(connection, str(path))
        try:
            found = source.columns()
        except sqlite3.DatabaseError as exc:
            raise ImportFailed(f"{path} is not a SQLite database: {exc}") from exc
        _check_schema(str(path), found)
        yield source
    finally:
        connection.close()


class PostgresSource:
    """The original's tables in one schema of a PostgreSQL database, read-only."""

    def __init__(self, connection: psycopg.Connection[Any], schema: str, label: str) -> None:
        self.connection = connection
        self.schema = schema
        self.label = label

    def rows(self, table: str) -> list[Row]:
        # No rowid here: the first column (the primary key) keeps the order stable.
        order = ORDER.get(table, TABLES[table][0]).format(tiebreak="id")
        query = sql.SQL("SELECT {columns} FROM {table} ORDER BY {order}").format(
            columns=sql.SQL(", ").join(sql.Identifier(column) for column in TABLES[table]),
            table=sql.Identifier(self.schema, table),
            order=sql.SQL(order),
        )
        with self.connection.cursor() as cursor:
            cursor.execute(query)
            return [dict(zip(TABLES[table], row, strict=True)) for row in cursor.fetchall()]

    def columns(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = %s",
                (self.schema,),
            )
            for table, column in cursor.fetchall():
                found.setdefault(table, set()).add(column)
        return found


@contextmanager
def open_postgres(url: str, schema: str) -> Iterator[PostgresSource]:
    """The original's schema ``schema`` at ``url``, in a read-only session."""
    label = f"{redact(url)} (schema {schema})"
    try:
        connection = psycopg.connect(url, connect_timeout=10, autocommit=False)
    except psycopg.Error as exc:
        raise ImportFailed(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    try:
        connection.read_only = True
        source = PostgresSource(connection, schema, label)
        found = source.columns()
        if not found:
            raise ImportFailed(f"{redact(url)} has no schema {schema!r} with tables in it")
        _check_schema(label, found)
        yield source
    finally:
        connection.close()  # ends the read-only transaction; nothing was written
