"""The one guard for every path the server opens on a user's behalf.

A user-supplied path (a ``mount_volume`` folder, a ``file://`` model source, a
hub-supplied name joined to a root) is resolved to its real path first (symlinks and
``..`` followed), then must lie inside one of the operator's roots. The refusal is the
same words whether the path exists or not, so the guard is no oracle for what exists
outside the roots. Callers then open the resolved path they were given back, not the
string they were sent, so a symlink swapped in afterwards is not followed from there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class PathRefused(ValueError):
    """A path resolves outside every allowed root (or is not absolute)."""


def inside_roots(raw: str, roots: Sequence[Path], *, what: str = "path") -> Path:
    """The real path of ``raw`` when it lies inside one of ``roots``; else PathRefused.

    The message names only ``raw`` and the rule, never whether ``raw`` exists.
    """
    refusal = PathRefused(f"{what} {raw!r} is outside the allowed roots")
    if not raw or "\0" in raw or not os.path.isabs(raw):
        raise refusal
    real = Path(os.path.realpath(raw))
    for root in roots:
        base = Path(os.path.realpath(root))
        if real == base or base in real.parents:
            return real
    raise refusal
