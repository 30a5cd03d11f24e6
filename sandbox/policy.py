"""The sandbox and command policy: the one source of the rules sandboxes run under.

``/v1/policies`` shows these values and the checkers below enforce the same ones, so
what is shown is what is enforced. Both lists can be replaced by configuration
(``MATRIX_RUNTIME_ALLOWED_PROGRAMS``, ``MATRIX_RUNTIME_BLOCKED_TOKENS``).

The start-command rules, the original's (docs/COMPATIBILITY.md#c-10), applied to a raw
``start_command``:

1. Trim; an empty command is refused.
2. Any of :data:`FORBIDDEN_CHARACTERS` anywhere (inside quotes too) is refused; when
   several are present the first of that tuple is the one named.
3. Tokenise on spaces and tabs with single and double quotes grouping (no escapes,
   no expansion); an unterminated quote is refused.
4. The basename of the first token must be one of the allowed programs.
5. The basename of any token must not be one of the blocked tokens.

The env rules (the original's, plus sanity checks of our own) are in
:func:`env_validate`; secret references are found by :func:`secret_references` and
replaced by :func:`resolve_env`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings

from matrixcloud.errors import UnprocessableEntity
from sandbox.isolation import env_name_reserved, isolation_tier, limits_report

# In the original's order: the refusal message lists them like this (docs/COMPATIBILITY.md#c-10).
ALLOWED_PROGRAMS: tuple[str, ...] = ("npx", "uvx", "pipx", "python", "python3", "node")
BLOCKED_TOKENS: frozenset[str] = frozenset(
    {
        "apk", "apt", "apt-get", "bash", "curl", "dnf", "docker", "eval",
        "mkfs", "mount", "sh", "sudo", "systemctl", "wget", "yum", "zsh",
    }
)  # fmt: skip
# Every character the checker refuses, one by one (so `$`, `(` and `)` each count).
FORBIDDEN_CHARACTERS: tuple[str, ...] = ("&", "|", ";", "<", ">", "`", "$", "(", ")", "\n", "\r")
# The same rule as the original describes it to people, in /v1/policies
# (docs/COMPATIBILITY.md#c-10).
BLOCKED_SHELL_OPERATORS: tuple[str, ...] = ("&", "|", ";", "<", ">", "`", "$()", "newline")
ALLOWED_TRANSPORTS: tuple[str, ...] = ("stdio",)
MAX_LOG_BYTES = 1_048_576
REJECT_RAW_SECRETS = True

# Keys that look like they hold a secret: the original's case-insensitive substrings
# (docs/COMPATIBILITY.md#c-10).
SECRET_KEY_PATTERN = re.compile(
    r"secret|token|passw(?:or)?d|api[_-]?key|private[_-]?key|credential", re.IGNORECASE
)
SECRET_REFERENCE_PATTERNS = (
    re.compile(r"\$\{secret:([^}]+)\}"),
    re.compile(r"secret://(\S+)"),
)
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_ENTRIES = 200
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_CHARS = 32 * 1024
MAX_ENV_TOTAL_CHARS = 256 * 1024
GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
GO_ESCAPES["\v"] = r"\v"


class CommandRejected(UnprocessableEntity):
    """A start command the command policy refuses; the message says which rule."""


class EnvRejected(UnprocessableEntity):
    """An env entry a sandbox may not be given (bad name, size, reserved variable)."""


class RawSecretRejected(EnvRejected):
    """A secret-looking env key whose value is not a secret reference."""


class SecretUnknown(EnvRejected):
    """A secret reference that names no secret of the workspace."""


# --- The configured lists (docs/COMPATIBILITY.md#c-06) --------------------------------


def allowed_programs() -> tuple[str, ...]:
    """The programs a start command may run: the configured list, else the original's."""
    return tuple(settings.MATRIX_ALLOWED_PROGRAMS) or ALLOWED_PROGRAMS


def blocked_tokens() -> frozenset[str]:
    """The tokens a start command may not contain: the configured list, else the original's."""
    return frozenset(settings.MATRIX_BLOCKED_TOKENS) or BLOCKED_TOKENS


# --- Start commands (docs/COMPATIBILITY.md#c-10) --------------------------------------


def go_quote(text: str, quote: str = '"') -> str:
    """``text`` quoted as Go's ``%q`` prints it: the original's messages use that form."""
    out = []
    for char in text:
        if char in (quote, "\\"):
            out.append("\\" + char)
        elif char in GO_ESCAPES:
            out.append(GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
    return quote + "".join(out) + quote


def go_basename(path: str) -> str:
    """Go's ``filepath.Base``: trailing slashes dropped, ``.`` for empty, ``/`` for all-slash."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[-1] if stripped else "/"


def command_split(command: str) -> list[str]:
    """Split on spaces and tabs; quotes group and are removed; no escapes or expansion.

    A quote may open mid-token (``a"b c"`` is one token ``ab c``) and an empty quoted
    string is a token of its own. An unterminated quote is refused.
    """
    tokens: list[str] = []
    current: list[str] = []
    in_token = False
    quote = ""
    for char in command:
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in "'\"":
            quote, in_token = char, True
        elif char in " \t":
            if in_token:
                tokens.append("".join(current))
                current, in_token = [], False
        else:
            current.append(char)
            in_token = True
    if quote:
        raise CommandRejected("unbalanced quote in command")
    if in_token:
        tokens.append("".join(current))
    return tokens


def command_validate(start_command: str) -> list[str]:
    """The argv of an accepted ``start_command``; :class:`CommandRejected` otherwise."""
    command = start_command.strip()
    if not command:
        raise CommandRejected("empty start command")
    for char in FORBIDDEN_CHARACTERS:
        if char in command:
            raise CommandRejected(
                f"command contains forbidden shell metacharacter {go_quote(char, quote=chr(39))}"
            )
    tokens = command_split(command)
    if not tokens:
        raise CommandRejected("empty start command")
    programs = allowed_programs()
    program = go_basename(tokens[0])
    if program not in programs:
        raise CommandRejected(
            f"program {go_quote(program)} is not allowed (permitted: {', '.join(programs)})"
        )
    blocked = blocked_tokens()
    for token in tokens:
        if go_basename(token) in blocked:
            raise CommandRejected(f"command contains blocked token {go_quote(token)}")
    return tokens


# --- Env (docs/COMPATIBILITY.md#c-10, and sanity) -------------------------------------


def secret_reference(value: str) -> str | None:
    """The secret NAME of a ``${secret:NAME}`` or ``secret://NAME`` value, else None."""
    candidate = value.strip()
    for pattern in SECRET_REFERENCE_PATTERNS:
        match = pattern.fullmatch(candidate)
        if match:
            return match.group(1)
    return None


def env_sanity_check(env: Mapping[str, str]) -> None:
    """Refuse env a sandboxed process must not get, with :class:`EnvRejected`.

    Names are portable identifiers and nothing holds a NUL (the kernel would cut it
    short); sizes are bounded so one request cannot make a huge process environment.
    Loader and interpreter variables (``LD_*``, ``PATH``, ``PYTHONPATH``,
    ``NODE_OPTIONS``, … — see :func:`sandbox.isolation.env_name_reserved`) are refused
    because the env applies to the whole launch chain, not only to the validated
    program: inside the sandbox, ``setpriv`` and ``prlimit`` run first (``setpriv``
    still holding the capability to change uid when the host is root), and a preloaded
    library or a changed ``PATH`` would run code there, before the limits and the uid
    drop, and would run code the start-command policy never saw.
    """
    if len(env) > MAX_ENV_ENTRIES:
        raise EnvRejected(f"env has {len(env)} entries (at most {MAX_ENV_ENTRIES})")
    total = 0
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise EnvRejected("env keys and values must be strings")
        _env_entry_check(key, value)
        total += len(key) + len(value)
    if total > MAX_ENV_TOTAL_CHARS:
        raise EnvRejected(f"env is {total} characters in all (at most {MAX_ENV_TOTAL_CHARS})")


def _env_entry_check(key: str, value: str) -> None:
    if len(key) > MAX_ENV_NAME_CHARS or not ENV_NAME_PATTERN.fullmatch(key):
        raise EnvRejected(
            f"env key {go_quote(key[:MAX_ENV_NAME_CHARS])} is not a valid variable name "
            f"(letters, digits and _, not starting with a digit, at most "
            f"{MAX_ENV_NAME_CHARS} characters)"
        )
    if env_name_reserved(key):
        raise EnvRejected(
            f"env {go_quote(key)} is reserved: loader and interpreter variables (LD_*, PATH, "
            "PYTHONPATH, NODE_OPTIONS, …) are set by the sandbox"
        )
    if "\x00" in value:
        raise EnvRejected(f"env {go_quote(key)} contains a NUL character")
    if len(value) > MAX_ENV_VALUE_CHARS:
        raise EnvRejected(f"env {go_quote(key)} is longer than {MAX_ENV_VALUE_CHARS} characters")


def env_validate(env: Mapping[str, str]) -> None:
    """Check a sandbox's env at creation: sanity, then no raw secret values.

    A key that looks secret (``API_KEY``, ``GITHUB_TOKEN``, …) with a non-empty value
    must hold a secret reference; other keys may hold anything.
    """
    env_sanity_check(env)
    for key, value in env.items():
        if value and SECRET_KEY_PATTERN.search(key) and secret_reference(value) is None:
            raise RawSecretRejected(
                f"env {go_quote(key)} appears to contain a raw secret value; "
                "pass a secret reference instead"
            )


def secret_references(env: Mapping[str, str]) -> dict[str, str]:
    """KEY → secret NAME for every value that is a secret reference."""
    return {
        key: name for key, value in env.items() if (name := secret_reference(value)) is not None
    }


def resolve_env(env: Mapping[str, str], resolver: Callable[[str], str | None]) -> dict[str, str]:
    """``env`` with each secret reference replaced by ``resolver(NAME)``.

    ``resolver`` returns None for a name the workspace does not have, which is refused
    with :class:`SecretUnknown` (naming the key and the secret, never a value). The
    result goes to the child's environment only; it is never stored or logged.
    """
    resolved = dict(env)
    for key, name in secret_references(env).items():
        value = resolver(name)
        if value is None:
            raise SecretUnknown(f"env {go_quote(key)} refers to an unknown secret {go_quote(name)}")
        if "\x00" in value or len(value) > MAX_ENV_VALUE_CHARS:
            raise EnvRejected(
                f"the secret {go_quote(name)} cannot be passed in env {go_quote(key)}"
            )
        resolved[key] = value
    return resolved


# --- What /v1/policies shows -------------------------------------------------------------


def sandbox_policy() -> dict[str, Any]:
    """Limits and allow-lists every sandbox runs under, and the isolation in force."""
    return {
        "max_ttl_seconds": settings.MATRIX_MAX_TTL_SECONDS,
        "max_concurrent_jobs": settings.MATRIX_MAX_CONCURRENT_JOBS,
        "startup_timeout_seconds": _whole(settings.MATRIX_SANDBOX_START_TIMEOUT),
        "rpc_timeout_seconds": _whole(settings.MATRIX_SANDBOX_CALL_TIMEOUT),
        "max_log_bytes": MAX_LOG_BYTES,
        "allowed_programs": sorted(allowed_programs()),
        "allowed_transports": list(ALLOWED_TRANSPORTS),
        "reject_raw_secrets": REJECT_RAW_SECRETS,
        "isolation": isolation_tier(),
        "limits": sandbox_limits(),
    }


def sandbox_limits() -> dict[str, Any]:
    """What bounds one sandbox in all, and which mechanism enforces it."""
    report = limits_report()
    return {
        "enforced_by": report["limits_tier"],
        "reason": report["limits_reason"],
        "memory_mb": settings.MATRIX_SANDBOX_MEMORY_MB,
        "max_processes": settings.MATRIX_SANDBOX_MAX_PROCESSES,
        "cpus": report["cpus"],
        "disk_quota": report["disk_quota"],
        "disk_quota_reason": report["disk_quota_reason"],
        "disk_quota_mb": report["disk_quota_mb"],
        "max_live_per_workspace": settings.MATRIX_SANDBOX_MAX_PER_WORKSPACE or None,
    }


def _whole(seconds: float) -> float | int:
    """Seconds as the original showed them (an integer) unless configured fractional.

    Kept on purpose: docs/COMPATIBILITY.md#c-10.
    """
    return int(seconds) if float(seconds).is_integer() else seconds


def command_policy() -> dict[str, Any]:
    """What a start command may not contain."""
    return {
        "blocked_tokens": sorted(blocked_tokens()),
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
    """The three policies of ``/v1/policies``, in the original's order.

    Kept on purpose: docs/COMPATIBILITY.md#c-10.
    """
    return [
        {"name": "Sandbox Policy", "active": True, "body": sandbox_policy()},
        {"name": "Command Policy", "active": True, "body": command_policy()},
        {
            "name": "Runtime Policy",
            "active": True,
            "body": runtime_policy(include_paths=include_paths),
        },
    ]
