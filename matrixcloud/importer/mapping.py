"""From the original's rows to ours (ids kept): one function per table.

Accounts: a user's ``workspace_id`` and ``role`` become a ``Membership``; password
hashes are kept as they are (``accounts.hashers.GoPBKDF2PasswordHasher`` reads them and
re-hashes at the first sign-in). Session tokens, join-token and runtime-token hashes
carry over as SHA-256 of the same secret, which is what ours store. Provider secrets
are opened with the original's key and stored through our encrypted field. Work the
original was doing in memory (an attach in progress) did not survive it: such
installations arrive ``failed``, saying so.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

from django.contrib.auth.hashers import make_password

from accounts.choices import AuditStatus, Role
from accounts.models import (
    AuditEvent,
    Membership,
    ProviderCredential,
    SessionToken,
    UsageEvent,
    User,
    Workspace,
)
from accounts.services.identity import normalise_email
from accounts.services.providers import DEFAULT_LABEL, credential_hint
from matrixcloud.importer.errors import ImportFailed
from matrixcloud.importer.plan import OnConflict, Target
from matrixcloud.importer.secretbox import SourceKey
from matrixcloud.importer.source import Row
from matrixcloud.importer.values import (
    EPOCH,
    NEVER,
    integer,
    parse_json,
    parse_time,
    text,
    time_or,
)
from matrixcloud.lib.tokens import new_secret, secret_hash
from models_registry.choices import InstallationStatus, InstallMode, ProfileStatus
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.choices import RuntimeStatus
from runtimes.models import JoinToken, Runtime

TABLES = [
    "workspaces",
    "users",
    "memberships",
    "sessions",
    "model profiles",
    "model installations",
    "runtimes",
    "join tokens",
    "provider credentials",
    "usage events",
    "audit events",
]
GO_HASH = re.compile(r"pbkdf2\$\d+\$[0-9a-fA-F]+\$[0-9a-fA-F]+")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
INTERRUPTED = "the original's attach job did not survive the move to MatrixCloud; attach again"
ROLES = {role.value.lower(): role.value for role in Role}
INTERRUPTED_PROFILE = frozenset({ProfileStatus.QUEUED, ProfileStatus.DOWNLOADING})


class Mapper:
    """Maps one source's rows (read in full) to targets, collecting notes as it goes."""

    def __init__(
        self,
        data: dict[str, list[Row]],
        *,
        key: SourceKey | None,
        missing_key: str,
        now: datetime,
        carry_sessions: bool = True,
    ) -> None:
        self.data = data
        self.key = key
        self.missing_key = missing_key
        self.now = now
        self.carry_sessions = carry_sessions
        self.notes: list[str] = []
        self.tally: Counter[str] = Counter()
        self.workspace_of = {u["id"]: u["workspace_id"] for u in data["users"]}
        self.workspaces = self._known(
            Workspace, {w["id"] for w in data["workspaces"]}, _refs(data, "workspace_id")
        )
        self.users = self._known(User, set(self.workspace_of), _refs(data, "user_id", "created_by"))
        self.profiles = self._known(
            ModelProfile,
            {p["id"] for p in data["model_profiles"]},
            {i["model_profile_id"] for i in data["model_runtime_installations"]},
        )

    @staticmethod
    def _known(model: Any, in_source: set[str], referenced: set[str]) -> set[str]:
        """Ids a reference may point at: the source's, and ours among those referenced."""
        outside = sorted(referenced - in_source - {"", None})
        ours = set(model._default_manager.filter(pk__in=outside).values_list("pk", flat=True))
        return in_source | ours

    def targets(self) -> list[Target]:
        steps = [
            (self.data["workspaces"], self.workspace),
            (self.data["users"], self.user),
            (self.data["users"], self.membership),
            (self.data["sessions"] if self.carry_sessions else [], self.session),
            (self.data["model_profiles"], self.profile),
            (self.data["model_runtime_installations"], self.installation),
            (self.data["runtimes"], self.runtime),
            (self.data["runtime_join_tokens"], self.join_token),
            (self.data["provider_credentials"], self.provider),
            (self.data["usage_events"], self.usage),
            (self.data["audit_events"], self.audit),
        ]
        targets = [t for rows, step in steps for row in rows if (t := step(row)) is not None]
        self._summarise()
        return targets

    def _orphan(self, table: str, row: Row) -> bool:
        """A row of a workspace neither the source nor ours has: left out, counted."""
        if row["workspace_id"] in self.workspaces:
            return False
        self.tally[f"{table} of an unknown workspace"] += 1
        return True

    # --- accounts ---------------------------------------------------------------------

    def workspace(self, row: Row) -> Target:
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

    def user(self, row: Row) -> Target:
        email = normalise_email(str(row["email"] or ""))
        fields: dict[str, Any] = {
            "id": row["id"],
            "email": email[:254],
            "name": text(row["name"], 200),
            "password": row["password_hash"],
            "email_verified_at": self._verified_at(row["id"]),
            "is_active": True,
            "created_at": time_or(row["created_at"], EPOCH),
        }
        volatile: frozenset[str] = frozenset()
        if not GO_HASH.fullmatch(str(row["password_hash"] or "")):
            fields["password"] = make_password(None)
            volatile = frozenset({"password"})
            self.tally["users whose password hash is unusable (they must reset it)"] += 1
        return Target(
            table="users",
            model=User,
            key={"pk": row["id"]},
            fields=fields,
            label=f"user {row['id']} ({email})",
            volatile=volatile,
            unique=({"email__iexact": email},),
            on_conflict=OnConflict.FAIL,
        )

    def _verified_at(self, user_id: str) -> datetime | None:
        used = [
            t
            for v in self.data["email_verifications"]
            if v["user_id"] == user_id and (t := parse_time(v["used_at"])) is not None
        ]
        return min(used, default=None)

    def membership(self, row: Row) -> Target | None:
        if self._orphan("users", row):
            return None
        role = ROLES.get(str(row["role"] or "").strip().lower())
        if role is None:
            self.tally[f"users with the unknown role {row['role']!r} (made Member)"] += 1
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
        )

    def session(self, row: Row) -> Target | None:
        expires = parse_time(row["expires_at"])
        workspace_id = self.workspace_of.get(row["user_id"])
        if expires is None or expires <= self.now or workspace_id not in self.workspaces:
            self.tally["sessions expired or unusable (not imported)"] += 1
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
                # The original had no idle expiry; the first use starts ours.
                "idle_expires_at": expires,
            },
            label=f"a session of {row['user_id']}",
            volatile=frozenset({"last_used_at", "idle_expires_at"}),
        )

    # --- models -----------------------------------------------------------------------

    def profile(self, row: Row) -> Target | None:
        if self._orphan("model profiles", row):
            return None
        status, error = str(row["status"] or ""), ""
        if status in INTERRUPTED_PROFILE:
            status, error = ProfileStatus.FAILED, INTERRUPTED
            self.tally["model profiles whose attach was in progress (now failed)"] += 1
        elif status not in ProfileStatus.values:
            self.tally[f"model profiles with the unknown status {status!r} (profile_only)"] += 1
            status = ProfileStatus.PROFILE_ONLY
        created = time_or(row["created_at"], EPOCH)
        return Target(
            table="model profiles",
            model=ModelProfile,
            key={"pk": row["id"]},
            fields={
                "id": row["id"],
                "workspace_id": row["workspace_id"],
                **{name: text(row[name], limit) for name, limit in PROFILE_TEXT.items()},
                "tags": parse_json(row["tags_json"], None),
                "metadata": parse_json(row["metadata_json"], None),
                "status": status,
                "error": error,
                "created_at": created,
                "updated_at": time_or(row["updated_at"], created),
            },
            label=f"model profile {row['id']}",
        )

    def installation(self, row: Row) -> Target | None:
        if self._orphan("model installations", row):
            return None
        status, error = str(row["status"] or ""), ""
        if status in InstallationStatus.active() or status not in InstallationStatus.values:
            status, error = InstallationStatus.FAILED, INTERRUPTED
            self.tally["model installations in progress (now failed)"] += 1
        mode = str(row["install_mode"] or "")
        if mode not in InstallMode.values:
            self.tally[f"installations with the unknown install mode {mode!r}"] += 1
            mode = InstallMode.PULL_FROM_SOURCE
        profile_id = row["model_profile_id"] if row["model_profile_id"] in self.profiles else None
        created = time_or(row["created_at"], EPOCH)
        return Target(
            table="model installations",
            model=ModelInstallation,
            key={"pk": row["id"]},
            fields={
                "id": row["id"],
                "workspace_id": row["workspace_id"],
                "profile_id": profile_id,
                "runtime_id": text(row["runtime_id"], 64),
                "install_mode": mode,
                "serving_engine": text(row["serving_engine"], 40),
                "status": status,
                "progress": max(0, min(100, integer(row["progress"]))),
                "local_path": text(row["local_path"], 1000),
                "endpoint_url": text(row["endpoint_url"], 1000),
                "job_id": text(row["job_id"], 32),
                "error": error,
                "created_at": created,
                "updated_at": time_or(row["updated_at"], created),
            },
            label=f"model installation {row['id']}",
        )

    # --- runtimes ---------------------------------------------------------------------

    def runtime(self, row: Row) -> Target | None:
        if self._orphan("runtimes", row):
            return None
        created = time_or(row["created_at"], EPOCH)
        status = str(row["status"] or "")
        if status not in RuntimeStatus.values:
            self.tally[f"runtimes with the status {status!r} (now offline)"] += 1
            status = RuntimeStatus.OFFLINE
        token_hash, volatile, revoked = str(row["token_hash"] or ""), frozenset[str](), None
        if not SHA256_HEX.fullmatch(token_hash):
            # No usable token: a hash nobody holds the secret of, and revoked.
            token_hash, revoked = secret_hash(new_secret()), created
            volatile = frozenset({"token_hash"})
            self.tally["runtimes without a token (rotate it or register again)"] += 1
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
        )

    def join_token(self, row: Row) -> Target | None:
        if self._orphan("join tokens", row):
            return None
        created = time_or(row["created_at"], EPOCH)
        max_uses = max(1, integer(row["max_uses"], 1))
        uses = max(0, integer(row["uses"]))
        if uses > max_uses:  # the original's redemption was check-then-increment
            self.tally["join tokens used beyond their limit (uses set to the limit)"] += 1
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
                "created_by_id": row["created_by"] if row["created_by"] in self.users else None,
                "max_uses": max_uses,
                "uses": min(uses, max_uses),
                "expires_at": time_or(row["expires_at"], NEVER),
                "revoked_at": created if integer(row["revoked"]) else None,
                "created_at": created,
            },
            label=f"join token {row['id']}",
            unique=({"token_hash": token_hash},),
        )

    # --- providers, usage, audit ------------------------------------------------------

    def provider(self, row: Row) -> Target | None:
        if self._orphan("provider credentials", row):
            return None
        secret = self._open(row)
        if secret is None:
            return None
        name, label = _provider_name(row["provider"]), _label(row["label"])
        if (name, label) != (row["provider"], row["label"]):
            self.notes.append(
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
                "created_by_id": row["created_by"] if row["created_by"] in self.users else None,
                "created_at": created,
                "updated_at": time_or(row["updated_at"], created),
            },
            label=f"provider credential {row['id']}",
            unique=({"workspace_id": row["workspace_id"], "provider": name, "label": label},),
        )

    def _open(self, row: Row) -> str | None:
        if not row["secret_enc"]:
            self.tally["provider credentials without a stored secret (not imported)"] += 1
            return None
        if self.key is None:
            raise ImportFailed(self.missing_key)
        try:
            return self.key.open(str(row["secret_enc"]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImportFailed(
                f"the key from {self.key.origin} does not open provider credential "
                f"{row['id']} ({row['provider']} in {row['workspace_id']}): {exc}. Is it the "
                "original's key (its MATRIXCLOUD_SECRET_KEY, or the secret.key beside its "
                "database)? Nothing was imported."
            ) from exc

    def usage(self, row: Row) -> Target | None:
        if self._orphan("usage events", row):
            return None
        return Target(
            table="usage events",
            model=UsageEvent,
            key={"pk": row["id"]},
            fields={
                "id": row["id"],
                "workspace_id": row["workspace_id"],
                "user_id": row["user_id"] if row["user_id"] in self.users else None,
                "runtime_id": text(row["runtime_id"], 64),
                "kind": text(row["kind"], 32),
                "quantity": max(1, integer(row["quantity"], 1)),
                "meta": parse_json(row["meta_json"], {}),
                "created_at": time_or(row["created_at"], EPOCH),
            },
            label=f"usage event {row['id']}",
        )

    def audit(self, row: Row) -> Target:
        status = str(row["status"] or "")
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
        )

    def _summarise(self) -> None:
        self.notes.extend(f"{count} {what}" for what, count in sorted(self.tally.items()))
        pending = sum(1 for r in self.data["password_resets"] if not r["used_at"])
        if pending:
            self.notes.append(f"{pending} password-reset links not carried (ask again)")


PROFILE_TEXT = {
    "source_type": 40,
    "source_uri": 1000,
    "provider": 100,
    "external_id": 300,
    "display_name": 300,
    "task": 100,
    "library": 100,
    "license": 200,
}
RUNTIME_TEXT = {
    "name": 200,
    "mode": 40,
    "kind": 40,
    "url": 500,
    "hf_space": 200,
    "region": 100,
    "version": 100,
}


def _refs(data: dict[str, list[Row]], *columns: str) -> set[str]:
    return {row[c] for rows in data.values() for row in rows for c in columns if c in row}


def _provider_name(value: Any) -> str:
    """The original's free-form provider name as ours (``Hugging Face`` → ``hugging-face``)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", str(value or "").strip().lower()).strip("-._")
    return name[:64] or "provider"


def _label(value: Any) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value or "").strip()).strip("-._")
    return label[:64] or DEFAULT_LABEL
