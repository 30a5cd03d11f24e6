"""Runtimes, join tokens, provider credentials, usage and the audit log.

Join-token and runtime-token hashes are SHA-256 of the same secrets in both, so they
carry as they are. Provider secrets are opened with the original's key and stored
through our encrypted field (the key ring's primary key). Each row joins its workspace,
which must be the source's; a token another runtime or join token here holds is a
collision; a creator or user that is not the source's is left empty.
"""

from __future__ import annotations

import re
from typing import Any

from accounts.choices import AuditStatus
from accounts.models import AuditEvent, ProviderCredential, UsageEvent
from accounts.services.providers import DEFAULT_LABEL, credential_hint
from matrixcloud.importer.errors import ImportFailed
from matrixcloud.importer.mapping.context import Context
from matrixcloud.importer.plan import OnConflict, Target
from matrixcloud.importer.secretbox import ORIGINAL_KEY_ENV
from matrixcloud.importer.source import Row
from matrixcloud.importer.values import EPOCH, NEVER, integer, parse_json, text, time_or
from matrixcloud.lib.tokens import new_secret, secret_hash
from runtimes.choices import RuntimeStatus
from runtimes.models import JoinToken, Runtime

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
RUNTIME_TEXT = {
    "name": 200,
    "mode": 40,
    "kind": 40,
    "url": 500,
    "hf_space": 200,
    "region": 100,
    "version": 100,
}


def runtime(ctx: Context, row: Row) -> Target | None:
    if ctx.orphan("runtimes", row):
        return None
    created = time_or(row["created_at"], EPOCH)
    status = str(row["status"] or "")
    if status not in RuntimeStatus.values:
        ctx.tally[f"runtimes with the status {status!r} (now offline)"] += 1
        status = RuntimeStatus.OFFLINE
    token_hash, volatile, revoked = str(row["token_hash"] or ""), frozenset[str](), None
    if not SHA256_HEX.fullmatch(token_hash):
        # No usable token: a hash nobody holds the secret of, and revoked.
        token_hash, revoked = secret_hash(new_secret()), created
        volatile = frozenset({"token_hash"})
        ctx.tally["runtimes without a token (rotate it or register again)"] += 1
    caps = parse_json(row["caps_json"], [])
    return Target(
        table="runtimes",
        model=Runtime,
        key={"pk": row["id"]},
        fields={
            "id": row["id"],
            "workspace_id": row["workspace_id"],
            **{name: text(row[name], limit) for name, limit in RUNTIME_TEXT.items()},
            "caps": [str(c) for c in caps] if isinstance(caps, list) else [],
            "status": status,
            "token_hash": token_hash,
            "token_revoked_at": revoked,
            "last_seen_at": time_or(row["last_seen_at"], created),
            "created_at": created,
            "updated_at": time_or(row["updated_at"], created),
        },
        label=f"runtime {row['id']}",
        volatile=volatile,
        unique=() if volatile else ({"token_hash": token_hash},),
        on_conflict=OnConflict.COLLIDE,
        owners=ctx.owners(row),
    )


def join_token(ctx: Context, row: Row) -> Target | None:
    if ctx.orphan("join tokens", row):
        return None
    created = time_or(row["created_at"], EPOCH)
    max_uses = max(1, integer(row["max_uses"], 1))
    uses = max(0, integer(row["uses"]))
    # The original's redemption was check-then-increment (docs/COMPATIBILITY.md#f-04).
    if uses > max_uses:
        ctx.tally["join tokens used beyond their limit (uses set to the limit)"] += 1
    token_hash = str(row["token_hash"] or "").lower()
    return Target(
        table="join tokens",
        model=JoinToken,
        key={"pk": row["id"]},
        fields={
            "id": row["id"],
            "workspace_id": row["workspace_id"],
            "token_hash": token_hash,
            "label": text(row["label"], 200),
            "created_by_id": row["created_by"] if row["created_by"] in ctx.users else None,
            "max_uses": max_uses,
            "uses": min(uses, max_uses),
            "expires_at": time_or(row["expires_at"], NEVER),
            "revoked_at": created if integer(row["revoked"]) else None,
            "created_at": created,
        },
        label=f"join token {row['id']}",
        unique=({"token_hash": token_hash},),
        on_conflict=OnConflict.COLLIDE,
        owners=ctx.owners(row),
        optional=ctx.user_ref("created_by_id", row["created_by"]),
    )


def provider(ctx: Context, row: Row) -> Target | None:
    if ctx.orphan("provider credentials", row):
        return None
    secret = _open(ctx, row)
    if secret is None:
        return None
    name, label = _provider_name(row["provider"]), _label(row["label"])
    if (name, label) != (row["provider"], row["label"]):
        ctx.notes.append(
            f"provider credential {row['id']}: {row['provider']!r}/{row['label']!r} "
            f"stored as {name}/{label}"
        )
    created = time_or(row["created_at"], EPOCH)
    meta = parse_json(row["meta_json"], {})
    return Target(
        table="provider credentials",
        model=ProviderCredential,
        key={"pk": row["id"]},
        fields={
            "id": row["id"],
            "workspace_id": row["workspace_id"],
            "provider": name,
            "label": label,
            "secret": secret,
            "hint": credential_hint(secret),
            "meta": meta if isinstance(meta, dict) else {},
            "created_by_id": row["created_by"] if row["created_by"] in ctx.users else None,
            "created_at": created,
            "updated_at": time_or(row["updated_at"], created),
        },
        label=f"provider credential {row['id']}",
        unique=({"workspace_id": row["workspace_id"], "provider": name, "label": label},),
        owners=ctx.owners(row),
        optional=ctx.user_ref("created_by_id", row["created_by"]),
    )


def _open(ctx: Context, row: Row) -> str | None:
    if not row["secret_enc"]:
        ctx.tally["provider credentials without a stored secret (not imported)"] += 1
        return None
    try:
        return ctx.key.open(str(row["secret_enc"]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportFailed(
            f"the key from {ctx.key.origin} does not open provider credential "
            f"{row['id']} ({row['provider']} in {row['workspace_id']}): {exc}. Give the "
            "original's key (the value of its MATRIXCLOUD_SECRET_KEY, or the secret.key "
            f"beside its database) with {ORIGINAL_KEY_ENV} or --key-file. Nothing was "
            "imported."
        ) from exc


def usage(ctx: Context, row: Row) -> Target | None:
    if ctx.orphan("usage events", row):
        return None
    return Target(
        table="usage events",
        model=UsageEvent,
        key={"pk": row["id"]},
        fields={
            "id": row["id"],
            "workspace_id": row["workspace_id"],
            "user_id": row["user_id"] if row["user_id"] in ctx.users else None,
            "runtime_id": text(row["runtime_id"], 64),
            "kind": text(row["kind"], 32),
            "quantity": max(1, integer(row["quantity"], 1)),
            "meta": parse_json(row["meta_json"], {}),
            "created_at": time_or(row["created_at"], EPOCH),
        },
        label=f"usage event {row['id']}",
        owners=ctx.owners(row),
        optional=ctx.user_ref("user_id", row["user_id"]),
    )


def audit(ctx: Context, row: Row) -> Target:
    status = str(row["status"] or "")
    # An audit row may name a workspace that is gone (the original kept them); one that
    # is here must be the source's.
    known = row["workspace_id"] in ctx.workspaces
    return Target(
        table="audit events",
        model=AuditEvent,
        key={"id": row["id"]},
        fields={
            "id": row["id"],
            "workspace_id": row["workspace_id"] or None,
            "actor": text(row["actor"], 254),
            "action": text(row["action"], 64),
            "target": text(row["target"], 300),
            "ip": text(row["ip"], 64),
            "status": status if status in AuditStatus.values else AuditStatus.SUCCESS,
            "meta": parse_json(row["meta_json"], {}),
            "created_at": time_or(row["created_at"], EPOCH),
        },
        label=f"audit event {row['id']}",
        owners=ctx.owners(row) if known else (),
    )


def _provider_name(value: Any) -> str:
    """The original's free-form provider name as ours (``Hugging Face`` → ``hugging-face``)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", str(value or "").strip().lower()).strip("-._")
    return name[:64] or "provider"


def _label(value: Any) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value or "").strip()).strip("-._")
    return label[:64] or DEFAULT_LABEL
