"""A database in the original Go server's schema, with realistic rows, for import tests.

The DDL is the original's tables and columns (docs/COMPATIBILITY.md#c-16), the values
as the original wrote them: RFC 3339 second-precision text, ``*_json`` text, 0/1
integers, password hashes ``pbkdf2$120000$<salt hex>$<key hex>`` (C-07), session tokens
in plaintext, join and runtime tokens as SHA-256 hex (C-01), provider secrets sealed
with AES-256-GCM under a known key (C-16). This module seals and hashes on its own, from
that description, rather than through the importer's code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

KEY_HEX = "5f" * 16 + "a3" * 16  # the original's secret.key (hex of 32 bytes)
KEY_PASSPHRASE = "acme original passphrase"  # the same key given as MATRIXCLOUD_SECRET_KEY

DDL = [
    """CREATE TABLE IF NOT EXISTS workspaces (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, slug TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'Member', created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_users_workspace ON users(workspace_id)",
    """CREATE TABLE IF NOT EXISTS sessions (
        token TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_sessions_user ON sessions(user_id)",
    """CREATE TABLE IF NOT EXISTS model_profiles (
        id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, source_type TEXT NOT NULL,
        source_uri TEXT NOT NULL DEFAULT '', provider TEXT NOT NULL DEFAULT '',
        external_id TEXT NOT NULL DEFAULT '', display_name TEXT NOT NULL DEFAULT '',
        task TEXT NOT NULL DEFAULT '', library TEXT NOT NULL DEFAULT '',
        license TEXT NOT NULL DEFAULT '', tags_json TEXT NOT NULL DEFAULT '[]',
        metadata_json TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'profile_only',
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_model_profiles_workspace ON model_profiles(workspace_id)",
    """CREATE TABLE IF NOT EXISTS model_runtime_installations (
        id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, model_profile_id TEXT NOT NULL,
        runtime_id TEXT NOT NULL, install_mode TEXT NOT NULL DEFAULT 'pull_from_source',
        serving_engine TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'queued',
        progress INTEGER NOT NULL DEFAULT 0, local_path TEXT NOT NULL DEFAULT '',
        endpoint_url TEXT NOT NULL DEFAULT '', job_id TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS idx_model_installations_workspace
        ON model_runtime_installations(workspace_id)""",
    """CREATE TABLE IF NOT EXISTS runtimes (
        id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, name TEXT NOT NULL,
        mode TEXT NOT NULL DEFAULT 'customer-agent', kind TEXT NOT NULL DEFAULT 'self-hosted',
        url TEXT NOT NULL DEFAULT '', hf_space TEXT NOT NULL DEFAULT '',
        region TEXT NOT NULL DEFAULT '', caps_json TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL DEFAULT 'pending', token_hash TEXT NOT NULL DEFAULT '',
        version TEXT NOT NULL DEFAULT '', last_seen_at TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_runtimes_workspace ON runtimes(workspace_id)",
    """CREATE TABLE IF NOT EXISTS runtime_join_tokens (
        id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
        label TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL DEFAULT '',
        max_uses INTEGER NOT NULL DEFAULT 1, uses INTEGER NOT NULL DEFAULT 0,
        revoked INTEGER NOT NULL DEFAULT 0, expires_at TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_join_tokens_workspace ON runtime_join_tokens(workspace_id)",
    """CREATE TABLE IF NOT EXISTS provider_credentials (
        id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, provider TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT 'default', secret_enc TEXT NOT NULL DEFAULT '',
        hint TEXT NOT NULL DEFAULT '', meta_json TEXT NOT NULL DEFAULT '{}',
        created_by TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, UNIQUE(workspace_id, provider, label))""",
    """CREATE INDEX IF NOT EXISTS idx_provider_credentials_workspace
        ON provider_credentials(workspace_id)""",
    """CREATE TABLE IF NOT EXISTS usage_events (
        id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, user_id TEXT NOT NULL DEFAULT '',
        runtime_id TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL,
        quantity INTEGER NOT NULL DEFAULT 1, meta_json TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_usage_workspace_kind ON usage_events(workspace_id, kind)",
    """CREATE TABLE IF NOT EXISTS password_resets (
        id TEXT PRIMARY KEY, user_id TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
        expires_at TEXT NOT NULL, used_at TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_password_resets_user ON password_resets(user_id)",
    """CREATE TABLE IF NOT EXISTS email_verifications (
        id TEXT PRIMARY KEY, user_id TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
        expires_at TEXT NOT NULL, used_at TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_email_verifications_user ON email_verifications(user_id)",
    """CREATE TABLE IF NOT EXISTS audit_events (
        id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL DEFAULT '', action TEXT NOT NULL, target TEXT NOT NULL DEFAULT '',
        ip TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'success',
        meta_json TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS idx_audit_workspace_created
        ON audit_events(workspace_id, created_at)""",
]


def go_password_hash(password: str) -> str:
    """``pbkdf2$120000$<salt hex>$<key hex>``: PBKDF2-HMAC-SHA256, 16-byte salt, 32-byte key."""
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 120_000, 32)
    return f"pbkdf2$120000${salt.hex()}${key.hex()}"


def seal(key: bytes, plaintext: str) -> str:
    """Standard base64 of a 12-byte nonce and the AES-256-GCM sealed data, no AAD."""
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), None)).decode()


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Original:
    """What the tests know about the rows: secrets, passwords, ids."""

    passwords: dict[str, str]  # email -> password
    session_token: str  # maya's live session (plaintext, as the original stored it)
    expired_session_token: str
    join_secret: str  # acme's unused 2-use join token
    runtime_token: str  # acme's runtime
    provider_secrets: dict[tuple[str, str, str], str]  # (ws, provider, label) -> secret
    counts: dict[str, int]  # source rows per table
    audit_ids: list[str]  # in the order the original wrote them


ACME, GLOBEX = "ws_00000000000acme", "ws_0000000000globe"
MAYA, LEE, OSCAR = "usr_00000000000maya", "usr_000000000000lee", "usr_00000000000oscar"
PASSWORDS = {
    "maya@acme.io": "maya original pw 2024",
    "lee@acme.io": "lee-secret-pass",
    "oscar@globex.io": "oscar's own password",
}


def rows(now: datetime) -> tuple[dict[str, list[dict[str, Any]]], Original]:
    """The rows of every table, with times relative to ``now``."""

    def at(days: float) -> str:
        return rfc3339(now + timedelta(days=days))

    key = bytes.fromhex(KEY_HEX)
    session, expired = os.urandom(32).hex(), os.urandom(32).hex()
    join_secret, spent_secret, globex_join = (f"mxrt_{os.urandom(32).hex()}" for _ in range(3))
    runtime_token, globex_runtime_token = os.urandom(32).hex(), os.urandom(32).hex()
    secrets = {
        (ACME, "huggingface", "default"): "hf_acmeReadToken1234567890",
        (ACME, "openai", "work"): "sk-acme-openai-0123456789abcdef",
        (GLOBEX, "huggingface", "default"): "hf_globexPrivateToken0987",
    }
    tables: dict[str, list[dict[str, Any]]] = {
        "workspaces": [
            {"id": ACME, "name": "Acme", "slug": "acme", "created_at": at(-90)},
            {"id": GLOBEX, "name": "Globex", "slug": "globex", "created_at": at(-60)},
        ],
        "users": [
            _user(MAYA, ACME, "Maya Lin", "maya@acme.io", "Owner", at(-90)),
            _user(LEE, ACME, "Lee Park", "lee@acme.io", "Member", at(-80)),
            _user(OSCAR, GLOBEX, "Oscar Diaz", "oscar@globex.io", "Owner", at(-60)),
        ],
        "sessions": [
            {"token": session, "user_id": MAYA, "created_at": at(-2), "expires_at": at(28)},
            {"token": expired, "user_id": LEE, "created_at": at(-40), "expires_at": at(-10)},
            {
                "token": os.urandom(32).hex(),
                "user_id": OSCAR,
                "created_at": at(-1),
                "expires_at": at(29),
            },
        ],
        "model_profiles": [
            _profile("mp_00000000000qwen", ACME, "Qwen/Qwen2.5-7B-Instruct", "ready", at(-30)),
            _profile("mp_0000000000llama", ACME, "meta-llama/Llama-3.1-8B", "queued", at(-3)),
            _profile("mp_00000000globexm", GLOBEX, "mistralai/Mistral-7B-v0.3", "ready", at(-20)),
        ],
        "model_runtime_installations": [
            _installation("mi_00000000000qwen", ACME, "mp_00000000000qwen", "ready", 100, at(-29)),
            _installation(
                "mi_0000000000llama", ACME, "mp_0000000000llama", "downloading", 43, at(-3)
            ),
            _installation(
                "mi_00000000globexm", GLOBEX, "mp_00000000globexm", "ready", 100, at(-19)
            ),
        ],
        "runtimes": [
            _runtime("rt_00000000000acme", ACME, "acme-gpu-1", runtime_token, at(-25), at(-0.01)),
            _runtime(
                "rt_0000000000globe", GLOBEX, "globex-a10", globex_runtime_token, at(-15), at(-5)
            ),
        ],
        "runtime_join_tokens": [
            _join("jt_000000000000new", ACME, join_secret, "spare gpu", 2, 0, "", at(-1)),
            _join("jt_00000000000used", ACME, spent_secret, "gpu-1", 1, 1, at(-24), at(-25)),
            _join("jt_0000000000globe", GLOBEX, globex_join, "", 1, 0, at(5), at(-2)),
        ],
        "provider_credentials": [
            _provider(
                "pc_000000000000ahf", ACME, "huggingface", "default", MAYA, key, secrets, at(-28)
            ),
            _provider("pc_0000000000aopen", ACME, "openai", "work", MAYA, key, secrets, at(-27)),
            _provider(
                "pc_000000000000ghf", GLOBEX, "huggingface", "default", OSCAR, key, secrets, at(-14)
            ),
        ],
        "usage_events": [
            _usage("ue_00000000000001", ACME, MAYA, "", "model.inspect", 1, at(-29)),
            _usage(
                "ue_00000000000002", ACME, MAYA, "rt_00000000000acme", "model.attach", 1, at(-29)
            ),
            _usage("ue_00000000000003", ACME, LEE, "", "llm.tokens", 1834, at(-2)),
            _usage("ue_00000000000004", GLOBEX, OSCAR, "", "model.inspect", 3, at(-19)),
        ],
        "password_resets": [
            {
                "id": "pr_00000000000001",
                "user_id": LEE,
                "token_hash": sha256_hex(f"mxpr_{os.urandom(32).hex()}"),
                "expires_at": at(0.02),
                "used_at": "",
                "created_at": at(-0.01),
            }
        ],
        "email_verifications": [
            {
                "id": "ev_00000000000001",
                "user_id": MAYA,
                "token_hash": sha256_hex(f"mxev_{os.urandom(32).hex()}"),
                "expires_at": at(-88),
                "used_at": at(-89.5),
                "created_at": at(-90),
            }
        ],
        "audit_events": [
            _audit("au_0000000000000b", ACME, MAYA, "user.signup", "maya@acme.io", None, at(-90)),
            _audit(
                "au_00000000000003", GLOBEX, OSCAR, "user.signup", "oscar@globex.io", None, at(-60)
            ),
            _audit(
                "au_0000000000000a",
                "",
                "lee@acme.io",
                "user.login",
                "Lee@acme.io",
                None,
                at(-50),
                "failure",
            ),
            _audit(
                "au_00000000000001",
                ACME,
                MAYA,
                "model.imported",
                "Qwen2.5-7B-Instruct",
                {"provider": "Hugging Face", "external_id": "Qwen/Qwen2.5-7B-Instruct"},
                at(-30),
            ),
            _audit(
                "au_00000000000007",
                ACME,
                "rt_00000000000acme",
                "runtime.registered",
                "acme-gpu-1",
                {"kind": "self-hosted", "hf_space": ""},
                at(-25),
            ),
            _audit(
                "au_00000000000002",
                ACME,
                MAYA,
                "provider.credential.added",
                "huggingface",
                {"label": "default", "hint": "••••7890"},
                at(-28),
            ),
            _audit(
                "au_00000000000009",
                GLOBEX,
                OSCAR,
                "provider.credential.added",
                "huggingface",
                {"label": "default", "hint": "••••0987"},
                at(-14),
            ),
            _audit(
                "au_00000000000004",
                ACME,
                MAYA,
                "runtime.join_token.created",
                "jt_000000000000new",
                {"label": "spare gpu", "max_uses": 2},
                at(-1),
            ),
        ],
    }
    # The original returns the log newest first by created_at; it was written oldest first.
    ordered = sorted(tables["audit_events"], key=lambda row: row["created_at"])
    original = Original(
        passwords=PASSWORDS,
        session_token=session,
        expired_session_token=expired,
        join_secret=join_secret,
        runtime_token=runtime_token,
        provider_secrets=secrets,
        counts={table: len(values) for table, values in tables.items()},
        audit_ids=[row["id"] for row in ordered],
    )
    return tables, original


# A database crafted by someone who wants a workspace here: its own key and rows.
MALLORY = "usr_0000000mallory"
MALLORY_EMAIL = "mallory@crafted.test"
MALLORY_PASSWORD = "mallory's crafted password"
CRAFTED_KEY_HEX = "c4" * 32
CRAFTED = "mallory"  # the suffix of every id the crafted rows make up


@dataclass(frozen=True)
class Crafted:
    """What the crafter knows: the secrets of the rows they made up."""

    session_token: str  # Mallory's session, an Owner of the target workspace
    join_secret: str
    runtime_token: str
    provider_secret: str


def crafted_rows(
    workspace: str, now: datetime | None = None
) -> tuple[dict[str, list[dict[str, Any]]], Crafted]:
    """A source that reuses the id of ``workspace`` (a workspace here) with its own
    ``owner`` user Mallory, her live session, and a row in every table the importer
    fills, all in that workspace; its secrets sealed under ``CRAFTED_KEY_HEX``."""
    moment = now or datetime.now(UTC)

    def at(days: float) -> str:
        return rfc3339(moment + timedelta(days=days))

    key = bytes.fromhex(CRAFTED_KEY_HEX)
    crafted = Crafted(
        session_token=os.urandom(32).hex(),
        join_secret=f"mxrt_{os.urandom(32).hex()}",
        runtime_token=os.urandom(32).hex(),
        provider_secret="sk-crafted-0123456789abcdef",
    )
    ids = {table: f"{prefix}_0000000{CRAFTED}" for table, prefix in ID_PREFIXES.items()}
    secrets = {(workspace, "openai", "default"): crafted.provider_secret}
    join = _join(ids["join"], workspace, crafted.join_secret, "crafted", 5, 0, "", at(-1))
    tables: dict[str, list[dict[str, Any]]] = {
        "workspaces": [{"id": workspace, "name": "Crafted", "slug": CRAFTED, "created_at": at(-9)}],
        "users": [
            {
                "id": MALLORY,
                "workspace_id": workspace,
                "name": "Mallory",
                "email": MALLORY_EMAIL,
                "password_hash": go_password_hash(MALLORY_PASSWORD),
                "role": "owner",
                "created_at": at(-9),
            }
        ],
        "sessions": [
            {
                "token": crafted.session_token,
                "user_id": MALLORY,
                "created_at": at(-1),
                "expires_at": at(29),
            }
        ],
        "model_profiles": [_profile(ids["profile"], workspace, "crafted/model", "ready", at(-5))],
        "model_runtime_installations": [
            _installation(ids["installation"], workspace, ids["profile"], "ready", 100, at(-5))
        ],
        "runtimes": [
            _runtime(ids["runtime"], workspace, "crafted-gpu", crafted.runtime_token, at(-4), at(0))
        ],
        "runtime_join_tokens": [{**join, "created_by": MALLORY}],
        "provider_credentials": [
            _provider(
                ids["provider"], workspace, "openai", "default", MALLORY, key, secrets, at(-3)
            )
        ],
        "usage_events": [_usage(ids["usage"], workspace, MALLORY, "", "llm.tokens", 9, at(-2))],
        "password_resets": [],
        "email_verifications": [],
        "audit_events": [
            _audit(ids["audit"], workspace, MALLORY, "user.signup", MALLORY_EMAIL, None, at(-9))
        ],
    }
    return tables, crafted


ID_PREFIXES = {
    "profile": "mp",
    "installation": "mi",
    "runtime": "rt",
    "join": "jt",
    "provider": "pc",
    "usage": "ue",
    "audit": "au",
}


def _user(id_: str, ws: str, name: str, email: str, role: str, at: str) -> dict[str, Any]:
    return {
        "id": id_,
        "workspace_id": ws,
        "name": name,
        "email": email,
        "password_hash": go_password_hash(PASSWORDS[email]),
        "role": role,
        "created_at": at,
    }


def _profile(id_: str, ws: str, repo: str, status: str, at: str) -> dict[str, Any]:
    return {
        "id": id_,
        "workspace_id": ws,
        "source_type": "huggingface",
        "source_uri": f"hf:{repo}",
        "provider": "Hugging Face",
        "external_id": repo,
        "display_name": repo.split("/")[1],
        "task": "text-generation",
        "library": "transformers",
        "license": "apache-2.0",
        "tags_json": '["text-generation","chat"]',
        "metadata_json": '{"downloads":12345,"gated":false}',
        "status": status,
        "created_at": at,
        "updated_at": at,
    }


def _installation(
    id_: str, ws: str, profile: str, status: str, progress: int, at: str
) -> dict[str, Any]:
    done = status == "ready"
    return {
        "id": id_,
        "workspace_id": ws,
        "model_profile_id": profile,
        "runtime_id": "rt_local",
        "install_mode": "pull_from_source",
        "serving_engine": "vllm",
        "status": status,
        "progress": progress,
        "local_path": f"/data/models/serving/{profile}.json" if done else "",
        "endpoint_url": "",
        "job_id": f"job_{id_[3:]}aa",
        "created_at": at,
        "updated_at": at,
    }


def _runtime(id_: str, ws: str, name: str, token: str, at: str, seen: str) -> dict[str, Any]:
    return {
        "id": id_,
        "workspace_id": ws,
        "name": name,
        "mode": "customer-agent",
        "kind": "self-hosted",
        "url": f"https://{name}.example.test",
        "hf_space": "",
        "region": "eu-west",
        "caps_json": '["mcp.test","model.attach"]',
        "status": "online",
        "token_hash": sha256_hex(token),
        "version": "0.4.1",
        "last_seen_at": seen,
        "created_at": at,
        "updated_at": seen,
    }


def _join(
    id_: str, ws: str, secret: str, label: str, max_uses: int, uses: int, expires: str, at: str
) -> dict[str, Any]:
    return {
        "id": id_,
        "workspace_id": ws,
        "token_hash": sha256_hex(secret),
        "label": label,
        "created_by": MAYA if ws == ACME else OSCAR,
        "max_uses": max_uses,
        "uses": uses,
        "revoked": 0,
        "expires_at": expires,
        "created_at": at,
    }


def _provider(
    id_: str,
    ws: str,
    provider: str,
    label: str,
    by: str,
    key: bytes,
    secrets: dict[tuple[str, str, str], str],
    at: str,
) -> dict[str, Any]:
    secret = secrets[(ws, provider, label)]
    return {
        "id": id_,
        "workspace_id": ws,
        "provider": provider,
        "label": label,
        "secret_enc": seal(key, secret),
        "hint": "••••" + secret[-4:],
        "meta_json": '{"org":"research"}' if provider == "openai" else "null",
        "created_by": by,
        "created_at": at,
        "updated_at": at,
    }


def _usage(
    id_: str, ws: str, user: str, runtime: str, kind: str, quantity: int, at: str
) -> dict[str, Any]:
    return {
        "id": id_,
        "workspace_id": ws,
        "user_id": user,
        "runtime_id": runtime,
        "kind": kind,
        "quantity": quantity,
        "meta_json": "{}",
        "created_at": at,
    }


def _audit(
    id_: str,
    ws: str,
    actor: str,
    action: str,
    target: str,
    meta: dict[str, Any] | None,
    at: str,
    status: str = "success",
) -> dict[str, Any]:

    return {
        "id": id_,
        "workspace_id": ws,
        "actor": actor,
        "action": action,
        "target": target,
        "ip": "203.0.113.7",
        "status": status,
        "meta_json": json.dumps(meta),  # the original wrote "null" for no meta
        "created_at": at,
    }


def _insert_all(execute: Any, tables: dict[str, list[dict[str, Any]]], mark: str) -> None:
    # Workspaces and users first (the only foreign keys), audit rows in time order.
    for table, values in tables.items():
        if table == "audit_events":
            values = sorted(values, key=lambda row: row["created_at"])
        for row in values:
            columns = ", ".join(row)
            marks = ", ".join(mark for _ in row)
            execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))  # noqa: S608


def build_sqlite(path: Path, now: datetime | None = None) -> Original:
    """Create the original's SQLite database at ``path`` (WAL, foreign keys on)."""
    tables, original = rows(now or datetime.now(UTC))
    write_sqlite(path, tables)
    return original


def write_sqlite(path: Path, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Create a database in the original's schema at ``path`` holding ``tables``."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        for statement in DDL:
            connection.execute(statement)
        _insert_all(connection.execute, tables, "?")
        connection.commit()
    finally:
        connection.close()


def build_postgres(url: str, schema: str, now: datetime | None = None) -> Original:
    """Create the original's tables in ``schema`` at ``url`` (dropped first if present)."""
    tables, original = rows(now or datetime.now(UTC))
    write_postgres(url, schema, tables)
    return original


def write_postgres(url: str, schema: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Create the original's tables in ``schema`` at ``url`` holding ``tables``."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        with connection.transaction():
            for statement in DDL:
                connection.execute(statement)
            _insert_all(connection.execute, tables, "%s")


def drop_postgres(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
