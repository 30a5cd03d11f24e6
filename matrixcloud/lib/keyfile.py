"""Secrets kept in the data directory.

When no key is configured, one is created once, written with mode 0600 and announced
on stderr. A key that cannot be persisted is a start-up error: a key used for one
process only would make what it protected unreadable after a restart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def read_or_create_key(path: Path, *, purpose: str, nbytes: int = 32) -> str:
    """Return the hex key stored at ``path``, creating it (0600) if it is missing."""
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read the {purpose} at {path}: {exc}") from exc
    if existing:
        return existing
    key = secrets.token_hex(nbytes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our open: use theirs.
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"no {purpose} is configured and none can be stored at {path}: {exc}"
        ) from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    print(
        f"matrixcloud: created a new {purpose} at {path} (mode 0600); back it up", file=sys.stderr
    )
    return key


def write_keys(path: Path, keys: list[str]) -> None:
    """Replace the key ring at ``path`` atomically (mode 0600): readers see the old
    file or the new one, never a partial write."""
    if not keys:
        raise ValueError("a key ring needs at least one key")
    write_private_file(path, ",".join(keys) + "\n")


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by this user only.

    The file is created with mode 0600 (never chmod-ed afterwards, so it is not readable
    for an instant) under a fresh name (``O_EXCL``: no file or symlink someone planted is
    reused), synced, then renamed over ``path``.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> None:
    """Make sure ``path`` is a directory only this user can enter (0700, ours, no symlink).

    Created with the mode; an existing one of ours that is looser (an older install's
    0755) is tightened. One that is a symlink or belongs to another user is refused
    (``PermissionError``): whoever controls it could swap what we write there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not a directory of this user's: refusing to use it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
