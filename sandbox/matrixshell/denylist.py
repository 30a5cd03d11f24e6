"""The MatrixShell command denylist, a second line behind isolation.

The original's patterns (docs/COMPATIBILITY.md#c-11), plus the spellings its denylist
let through that mean the same thing (``rm -fr /``, ``rm -rf /*``,
``--no-preserve-root``: docs/COMPATIBILITY.md#f-06). Commands already run isolated as
an unprivileged user in their own namespaces, so this list only turns obvious
destructive intent into a clear refusal; it is not what keeps the host safe.
"""

from __future__ import annotations

import re

DENY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bmkfs", re.IGNORECASE),
    re.compile(r"\bdd\s+if=", re.IGNORECASE),
    re.compile(r"\bfdisk\b", re.IGNORECASE),
    re.compile(r"diskpart", re.IGNORECASE),
    re.compile(r"shutdown", re.IGNORECASE),
    re.compile(r"reboot", re.IGNORECASE),
    re.compile(r"mkswap", re.IGNORECASE),
    re.compile(r":\(\)\s*\{"),
    # rm with both -r and -f (any order or spelling) aimed at /, /*, ~ or $HOME.
    re.compile(
        r"\brm\s+(?:-[a-z]*(?:r[a-z]*f|f[a-z]*r)[a-z]*|-[rf]\s+-[rf]|--recursive\s+--force"
        r"|--force\s+--recursive)\s+(?:/\*?|~/?|\$HOME/?|\$\{HOME\}/?)(?:\s|$)",
        re.IGNORECASE,
    ),
    re.compile(r"--no-preserve-root", re.IGNORECASE),
    re.compile(r">\s*/dev/sd"),
)


def command_denied(command: str) -> bool:
    """Whether the trimmed ``command`` matches a denylist pattern."""
    text = command.strip()
    return any(pattern.search(text) for pattern in DENY_PATTERNS)
