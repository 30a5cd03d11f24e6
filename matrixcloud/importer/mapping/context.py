"""What every table's mapping needs: the source's rows, the key, which ids exist, notes."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from accounts.models import User, Workspace
from matrixcloud.importer.plan import Ref
from matrixcloud.importer.secretbox import SourceKey
from matrixcloud.importer.source import Row
from matrixcloud.importer.values import parse_time
from models_registry.models import ModelProfile


class Context:
    """One source's rows (read in full) and what the mapping learns on the way.

    ``workspaces``, ``users`` and ``profiles`` are the ids a reference may point at:
    the source's own, and ours among those it references (which planning accepts only
    when an earlier import of this source made them). ``tally`` counts rows changed or
    left out for a reason; each reason becomes one note.
    """

    def __init__(
        self,
        data: dict[str, list[Row]],
        *,
        key: SourceKey,
        now: datetime,
        carry_sessions: bool = True,
    ) -> None:
        self.data = data
        self.key = key
        self.now = now
        self.carry_sessions = carry_sessions
        self.notes: list[str] = []
        self.tally: Counter[str] = Counter()
        self.workspace_of = {u["id"]: u["workspace_id"] for u in data["users"]}
        self.workspaces = _known(
            Workspace, {w["id"] for w in data["workspaces"]}, _refs(data, "workspace_id")
        )
        self.users = _known(User, set(self.workspace_of), _refs(data, "user_id", "created_by"))
        self.verified_at = _first_verifications(data["email_verifications"])
        self.profiles = _known(
            ModelProfile,
            {p["id"] for p in data["model_profiles"]},
            {i["model_profile_id"] for i in data["model_runtime_installations"]},
        )

    def orphan(self, table: str, row: Row) -> bool:
        """A row of a workspace neither the source nor ours has: left out, counted."""
        if row["workspace_id"] in self.workspaces:
            return False
        self.tally[f"{table} of an unknown workspace"] += 1
        return True

    def owners(self, row: Row) -> tuple[Ref, ...]:
        """The workspace a workspace-scoped row joins."""
        return (("workspaces", row["workspace_id"]),)

    def user_ref(self, name: str, user_id: Any) -> dict[str, Ref]:
        """``name`` (a field that only points at a user) as a `plan.Target.optional`."""
        return {name: ("users", user_id)} if user_id in self.users else {}

    def summarise(self) -> None:
        """Turn the tally into notes, and say what is not carried at all."""
        self.notes.extend(f"{count} {what}" for what, count in sorted(self.tally.items()))
        pending = sum(1 for r in self.data["password_resets"] if not r["used_at"])
        if pending:
            self.notes.append(f"{pending} password-reset links not carried (ask again)")


def _known(model: Any, in_source: set[str], referenced: set[str]) -> set[str]:
    outside = sorted(referenced - in_source - {"", None})
    ours = set(model._default_manager.filter(pk__in=outside).values_list("pk", flat=True))
    return in_source | ours


def _first_verifications(rows: list[Row]) -> dict[str, datetime]:
    """When each user first used an email-verification link (our ``email_verified_at``)."""
    first: dict[str, datetime] = {}
    for row in rows:
        used = parse_time(row["used_at"])
        if used is not None and (row["user_id"] not in first or used < first[row["user_id"]]):
            first[row["user_id"]] = used
    return first


def _refs(data: dict[str, list[Row]], *columns: str) -> set[str]:
    return {row[c] for rows in data.values() for row in rows for c in columns if c in row}
