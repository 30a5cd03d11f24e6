"""From the original's rows to ours (ids kept): one function per table.

``targets`` runs them in an order where every row comes after the rows it refers to:
`accounts` (workspaces, users, memberships, sessions), `registry` (model profiles and
installations), `cloud` (runtimes, join tokens, provider credentials, usage, audit).
Each returns the row of ours the source row stands for (a `plan.Target`), or None for
a row left out, which the `context` counts into a note.
"""

from __future__ import annotations

from collections.abc import Callable

from matrixcloud.importer.mapping import accounts, cloud, registry
from matrixcloud.importer.mapping.context import Context
from matrixcloud.importer.plan import Target
from matrixcloud.importer.source import Row

__all__ = ["TABLES", "Context", "targets"]

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
Step = Callable[[Context, Row], Target | None]
STEPS: list[tuple[str, Step]] = [
    ("workspaces", accounts.workspace),
    ("users", accounts.user),
    ("users", accounts.membership),
    ("sessions", accounts.session),
    ("model_profiles", registry.profile),
    ("model_runtime_installations", registry.installation),
    ("runtimes", cloud.runtime),
    ("runtime_join_tokens", cloud.join_token),
    ("provider_credentials", cloud.provider),
    ("usage_events", cloud.usage),
    ("audit_events", cloud.audit),
]


def targets(context: Context) -> list[Target]:
    """Every source row as a row of ours, references first; notes left on ``context``."""
    found: list[Target] = []
    for table, step in STEPS:
        if table == "sessions" and not context.carry_sessions:
            continue
        found.extend(t for row in context.data[table] if (t := step(context, row)) is not None)
    context.summarise()
    return found
