"""The sandbox and command policy: the one source of the rules sandboxes run under.

``/v1/policies`` shows these values, and the start-command checker (reference §10.1,
added with the sandbox host) reads the same constants, so what is shown is what is
enforced. The checker itself is not here yet: this module holds the data only.

The rules, as the original applies them to a raw ``start_command``:

1. Trim; an empty command is refused.
2. Any of :data:`FORBIDDEN_CHARACTERS` anywhere (inside quotes too) is refused.
3. Tokenise on spaces and tabs with single and double quotes grouping (no escapes,
   no expansion); an unterminated quote is refused.
4. The basename of the first token must be one of :data:`ALLOWED_PROGRAMS`.
5. The basename of any token must not be one of :data:`BLOCKED_TOKENS`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

ALLOWED_PROGRAMS: frozenset[str] = frozenset({"node", "npx", "pipx", "python", "python3", "uvx"})
BLOCKED_TOKENS: frozenset[str] = frozenset(
    {
        "apk", "apt", "apt-get", "bash", "curl", "dnf", "docker", "eval",
        "mkfs", "mount", "sh", "sudo", "systemctl", "wget", "yum", "zsh",
    }
)  # fmt: skip
# Every character the checker refuses, one by one (so `$`, `(` and `)` each count).
FORBIDDEN_CHARACTERS: tuple[str, ...] = ("&", "|", ";", "<", ">", "`", "$", "(", ")", "\n", "\r")
# The same rule as the original describes it to people, in /v1/policies.
BLOCKED_SHELL_OPERATORS: tuple[str, ...] = ("&", "|", ";", "<", ">", "`", "$()", "newline")
ALLOWED_TRANSPORTS: tuple[str, ...] = ("stdio",)
STARTUP_TIMEOUT_SECONDS = 45
RPC_TIMEOUT_SECONDS = 20
MAX_LOG_BYTES = 1_048_576
REJECT_RAW_SECRETS = True


def isolation_tier() -> str:
    """The isolation sandboxes get on this machine.

    ``"unknown"`` until the sandbox host detects what it can use (bubblewrap
    namespaces, rlimits only, none); ``/v1/ready`` and ``/v1/policies`` report it.
    """
    return "unknown"


def sandbox_policy() -> dict[str, Any]:
    """Limits and allow-lists every sandbox runs under."""
    return {
        "max_ttl_seconds": settings.MATRIX_MAX_TTL_SECONDS,
        "max_concurrent_jobs": settings.MATRIX_MAX_CONCURRENT_JOBS,
        "startup_timeout_seconds": STARTUP_TIMEOUT_SECONDS,
        "rpc_timeout_seconds": RPC_TIMEOUT_SECONDS,
        "max_log_bytes": MAX_LOG_BYTES,
        "allowed_programs": sorted(ALLOWED_PROGRAMS),
        "allowed_transports": list(ALLOWED_TRANSPORTS),
        "reject_raw_secrets": REJECT_RAW_SECRETS,
    }


def command_policy() -> dict[str, Any]:
    """What a start command may not contain."""
    return {
        "blocked_tokens": sorted(BLOCKED_TOKENS),
        "blocked_shell_operators": list(BLOCKED_SHELL_OPERATORS),
    }


def runtime_policy(*, include_paths: bool) -> dict[str, Any]:
    """How this installation is configured; filesystem paths only when ``include_paths``."""
    body: dict[str, Any] = {
        "mode": settings.MATRIX_MODE,
        "api_token_set": bool(settings.MATRIX_API_TOKEN),
        "matrixshell_enabled": settings.MATRIX_MATRIXSHELL_ENABLED,
        "rate_limit_rpm": settings.MATRIX_RATE_LIMIT_RPM,
        "cloud_url": settings.MATRIX_CLOUD_URL,
        "outbound_only": True,
        "isolation": isolation_tier(),
    }
    if include_paths:
        body["data_dir"] = str(settings.MATRIX_DATA_DIR)
    return body


def policies_describe(*, include_paths: bool) -> list[dict[str, Any]]:
    """The three policies of ``/v1/policies``, in the original's order."""
    return [
        {"name": "Sandbox Policy", "active": True, "body": sandbox_policy()},
        {"name": "Command Policy", "active": True, "body": command_policy()},
        {
            "name": "Runtime Policy",
            "active": True,
            "body": runtime_policy(include_paths=include_paths),
        },
    ]
