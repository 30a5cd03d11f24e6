"""What this installation is and whether it can serve: ``/v1/version`` and ``/v1/ready``.

Readiness is a list of named boolean checks, each bounded in time so a dead
dependency makes the probe answer "not ready" quickly instead of hanging: the mode,
the database (one query), the data dir (create and remove a file), the bus (a Redis
ping) and the heartbeats of a worker and a sandbox host; in production modes also
sandbox isolation. Warnings flag a configuration that works but should not be run
like this.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from jobs.choices import ProcessRole
from jobs.heartbeats import role_is_live
from matrixcloud.lib.env import env_str
from sandbox.enforcement import enforcement_summary
from sandbox.isolation import isolation_ready, isolation_tier, limits_report

DATABASE_TIMEOUT_MS = 3000
BUS_TIMEOUT_SECONDS = 1.0
GIT_TIMEOUT_SECONDS = 2.0


@functools.cache
def git_commit() -> str:
    """The short commit of a source checkout this runs from, computed once; else ``none``."""
    if not (settings.BASE_DIR / ".git").exists():
        return "none"
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "none"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "none"


def version_info() -> dict[str, str]:
    """Build and version metadata; ``MATRIX_RUNTIME_COMMIT``/``_BUILD_TIME`` stamp a build."""
    return {
        "name": "matrix-runtime",
        "implementation": settings.IMPLEMENTATION,
        "version": settings.VERSION,
        "commit": env_str("MATRIX_RUNTIME_COMMIT") or git_commit(),
        "build_time": env_str("MATRIX_RUNTIME_BUILD_TIME", "unknown"),
        "mode": settings.MATRIX_MODE,
        "python": platform.python_version(),
        "django": django.get_version(),
    }


def check_mode() -> bool:
    return settings.MATRIX_MODE in settings.MODES


def check_database() -> bool:
    """One real query, bounded: a local statement timeout on PostgreSQL; on SQLite a
    ``SELECT 1`` outside any transaction, which takes no lock a writer could hold."""
    try:
        if connection.vendor == "postgresql":
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [str(DATABASE_TIMEOUT_MS)]
                )
                cursor.execute("SELECT 1")
                return cursor.fetchone() == (1,)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        return False


def check_data_dir() -> bool:
    """The data dir exists (or can be made) and a file can be created and removed in it."""
    try:
        settings.MATRIX_DATA_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.MATRIX_DATA_DIR, prefix=".ready-"):
            pass
    except OSError:
        return False
    return True


def check_bus() -> bool:
    """A Redis ping of ``REDIS_URL``; with no URL the in-process layer is always there."""
    if not settings.REDIS_URL:
        return True
    from matrixcloud.lib.bus import bus_ping

    return bus_ping(settings.REDIS_URL, timeout=BUS_TIMEOUT_SECONDS)


def check_role(role: str) -> Callable[[], bool]:
    """A check that some process of ``role`` is alive."""

    def check() -> bool:
        try:
            return role_is_live(role)
        except DatabaseError:
            return False

    return check


CHECKS: dict[str, Callable[[], bool]] = {
    "mode_valid": check_mode,
    "database": check_database,
    "data_dir_writable": check_data_dir,
    "bus": check_bus,
    "worker": check_role(ProcessRole.WORKER),
    "sandbox_host": check_role(ProcessRole.SANDBOX_HOST),
}


def readiness_checks() -> dict[str, Callable[[], bool]]:
    """The checks in force: production modes also need sandbox isolation (or the override)."""
    if settings.MATRIX_PRODUCTION:
        return {**CHECKS, "isolation": isolation_ready}
    return CHECKS


def readiness_warnings() -> list[dict[str, str]]:
    """Configuration that serves, but should not be used like this; what sandboxes get
    weaker than the production default comes from :mod:`sandbox.enforcement` (with its
    fix), as ``serve`` prints it and the console's banner shows it."""
    candidates = [
        (
            settings.MATRIX_PRODUCTION and not settings.MATRIX_API_TOKEN,
            "api_token_missing",
            "no operator token (MATRIX_RUNTIME_API_TOKEN) is set: only user sessions can "
            "use the gated endpoints",
        ),
        (
            settings.MATRIX_MATRIXSHELL_ENABLED,
            "matrixshell_enabled",
            "MatrixShell is enabled: it executes commands on this machine",
        ),
        (
            settings.MATRIX_PRODUCTION and settings.MATRIX_DATABASE_KIND == "sqlite",
            "sqlite_in_use",
            "SQLite is in use: set DATABASE_URL to PostgreSQL for multi-user or HA setups",
        ),
        (
            not settings.REDIS_URL,
            "bus_in_process",
            "no REDIS_URL: the in-process bus cannot reach workers or sandbox hosts in "
            "other processes",
        ),
        (
            settings.MATRIX_MODE == "local-dev",
            "local_dev_mode",
            "local-dev mode is for one developer's machine and is not hardened for production",
        ),
    ]
    found = [{"code": code, "message": message} for active, code, message in candidates if active]
    return [*found, *enforcement_summary().warnings()]


def readiness_report() -> dict[str, Any]:
    """``{ready, checks, warnings, isolation}`` plus ``error`` naming the failing checks."""
    checks = {name: check() for name, check in readiness_checks().items()}
    failing = [name for name, passed in checks.items() if not passed]
    report: dict[str, Any] = {
        "ready": not failing,
        "checks": checks,
        "warnings": readiness_warnings(),
        "isolation": isolation_tier(),
        "limits": limits_report()["limits_tier"],
        "disk_quota": limits_report()["disk_quota"],
    }
    if failing:
        report["error"] = f"not ready: {', '.join(failing)}"
        report["status"] = 503
    return report
