"""Where a sandbox's ``${secret:NAME}`` and ``secret://NAME`` references are resolved.

The host calls :func:`resolve_secret` for each reference when it starts a session (never
at creation, never stored): the value goes into the server's environment only.
"""

from __future__ import annotations


def resolve_secret(workspace_id: str, name: str) -> str | None:
    """The value of the workspace's secret ``name``, or None when it has none.

    Secret providers (the workspace's provider credentials) arrive with their own issue,
    which fills this in. Until then no workspace has secrets: every reference is
    unknown, and a session that uses one fails to start with an error naming the env
    key and the secret (``sandbox.policy.resolve_env`` raises ``SecretUnknown``).
    """
    del workspace_id, name
    return None
