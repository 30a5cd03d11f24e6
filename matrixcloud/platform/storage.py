"""How much the data directory holds, by area, and how much disk is left.

Areas are the original's (docs/COMPATIBILITY.md#c-14): the Hugging Face cache,
per-sandbox dirs, agents, jobs, logs and the database. Sizes are regular files only
(symbolic links are not followed, so the Hugging Face cache's snapshot links do not
count their blobs twice), and a walk stops after :data:`MAX_ENTRIES` entries so a huge
tree cannot stall the request.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from jobs.selectors import job_row_count

logger = logging.getLogger(__name__)

MAX_ENTRIES = 100_000
SQLITE_SUFFIXES = ("", "-wal", "-shm")


def area_paths() -> dict[str, Path]:
    """Each area of the data dir and the directory that holds it."""
    data = Path(settings.MATRIX_DATA_DIR)
    return {
        "models": Path(settings.MATRIX_HF_CACHE_DIR),
        "mcp": data / "mcp",
        "agents": data / "agents",
        "jobs": data / "jobs",
        "logs": data / "logs",
    }


def tree_bytes(root: Path, *, max_entries: int = MAX_ENTRIES) -> int:
    """Total size of the regular files under ``root`` (0 if missing), walking at most
    ``max_entries`` entries."""
    total, seen, pending = 0, 0, [root]
    while pending and seen < max_entries:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    seen += 1
                    total += _entry_bytes(entry, pending)
                    if seen >= max_entries:
                        logger.warning(
                            "storage: stopped counting %s after %d entries", root, max_entries
                        )
                        break
        except OSError:
            continue
    return total


def _entry_bytes(entry: os.DirEntry[str], pending: list[Path]) -> int:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return 0
    if stat.S_ISDIR(info.st_mode):
        pending.append(Path(entry.path))
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def database_bytes() -> int:
    """The database's size: SQLite file plus WAL and shared memory; PostgreSQL's own count."""
    if connection.vendor == "postgresql":
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_database_size(current_database())")
                row = cursor.fetchone()
        except DatabaseError:
            return 0
        return int(row[0]) if row else 0
    name = str(connection.settings_dict["NAME"])
    return sqlite_bytes(Path(name))


def sqlite_bytes(path: Path) -> int:
    """A SQLite database at ``path`` with its ``-wal`` and ``-shm`` files (0 in memory)."""
    return sum(file_bytes(Path(f"{path}{suffix}")) for suffix in SQLITE_SUFFIXES)


def free_bytes(path: Path) -> int:
    """Free space available on the filesystem holding ``path`` (0 when unknown)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def storage_report(*, include_paths: bool) -> dict[str, Any]:
    """``/v1/system/storage``: area sizes, their total, free disk and the job count."""
    areas = {name: tree_bytes(path) for name, path in area_paths().items()}
    areas["database"] = database_bytes()
    report: dict[str, Any] = {
        "areas": areas,
        "total_bytes": sum(areas.values()),
        "free_bytes": free_bytes(Path(settings.MATRIX_DATA_DIR)),
        "jobs_count": job_row_count(),
    }
    if include_paths:
        report = {"data_dir": str(settings.MATRIX_DATA_DIR), **report}
    return report
