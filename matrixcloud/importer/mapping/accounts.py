"""Accounts: workspaces, users, their memberships and sessions.

A user's ``workspace_id`` and ``role`` become a ``Membership``. Password hashes are kept
as they are: ``accounts.hashers.GoPBKDF2PasswordHasher`` reads them and the first
sign-in re-hashes with Argon2id. A session keeps working: ours stores the SHA-256 of
the same token the original kept in plaintext. A membership and a session join a user
and a workspace, which must both be the source's; an email another user here holds is a
collision.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.hashers import make_password

from accounts.choices import Role
from accounts.models import Membership, SessionToken, User, Workspace
from accounts.services.identity import normalise_email
from matrixcloud.importer.mapping.context import Context
from matrixcloud.importer.plan import OnConflict, Target
from matrixcloud.importer.source import Row
from matrixcloud.importer.values import EPOCH, parse_time, text, time_or
from matrixcloud.lib.tokens import secret_hash

GO_HASH = re.compile(r"pbkdf2\$\d+\$[0-9a-fA-F]+\$[0-9a-fA-F]+")
ROLES = {role.value.lower(): role.value for role in Role}


def workspace(ctx: Context, row: Row) -> Target:
    return Target(
        table="workspaces",
        model=Workspace,
        key={"pk": row["id"]},
        fields={
            "id": row["id"],
            "name": text(row["name"], 200),
            "slug": text(row["slug"], 120),
            "created_at": time_or(row["created_at"], EPOCH),
        },
        label=f"workspace {row['id']}",
        unique=({"slug": text(row["slug"], 120)},),
        on_conflict=OnConflict.NEW_SLUG,
    )


def user(ctx: Context, row: Row) -> Target:
    email = normalise_email(str(row["email"] or ""))
    fields: dict[str, Any] = {
        "id": row["id"],
        "email": email[:254],
        "name": text(row["name"], 200),
        "password": row["password_hash"],
        "email_verified_at": ctx.verified_at.get(row["id"]),
        "is_active": True,
        "created_at": time_or(row["created_at"], EPOCH),
    }
    volatile: frozenset[str] = frozenset()
    if not GO_HASH.fullmatch(str(row["password_hash"] or "")):
        fields["password"] = make_password(None)
        volatile = frozenset({"password"})
        ctx.tally["users whose password hash is unusable (they must reset it)"] += 1
    return Target(
        table="users",
        model=User,
        key={"pk": row["id"]},
        fields=fields,
        label=f"user {row['id']} ({email})",
        volatile=volatile,
        unique=({"email__iexact": email},),
        on_conflict=OnConflict.COLLIDE,
    )


def membership(ctx: Context, row: Row) -> Target | None:
    if ctx.orphan("users", row):
        return None
    role = ROLES.get(str(row["role"] or "").strip().lower())
    if role is None:
        ctx.tally[f"users with the unknown role {row['role']!r} (made Member)"] += 1
        role = Role.MEMBER
    return Target(
        table="memberships",
        model=Membership,
        key={"user_id": row["id"], "workspace_id": row["workspace_id"]},
        fields={
            "user_id": row["id"],
            "workspace_id": row["workspace_id"],
            "role": role,
            "created_at": time_or(row["created_at"], EPOCH),
        },
        label=f"membership of {row['id']} in {row['workspace_id']}",
        owners=(("users", row["id"]), ("workspaces", row["workspace_id"])),
    )


def session(ctx: Context, row: Row) -> Target | None:
    expires = parse_time(row["expires_at"])
    workspace_id = ctx.workspace_of.get(row["user_id"])
    if expires is None or expires <= ctx.now or workspace_id not in ctx.workspaces:
        ctx.tally["sessions expired or unusable (not imported)"] += 1
        return None
    created = time_or(row["created_at"], EPOCH)
    token_hash = secret_hash(str(row["token"]))
    return Target(
        table="sessions",
        model=SessionToken,
        key={"token_hash": token_hash},
        fields={
            "token_hash": token_hash,
            "user_id": row["user_id"],
            "workspace_id": workspace_id,
            "created_at": created,
            "last_used_at": created,
            "expires_at": expires,
            # The original had no idle expiry; the first use starts ours
            # (docs/COMPATIBILITY.md#f-08).
            "idle_expires_at": expires,
        },
        label=f"a session of {row['user_id']}",
        volatile=frozenset({"last_used_at", "idle_expires_at"}),
        owners=(("users", row["user_id"]), ("workspaces", workspace_id)),
    )
