"""Reads for the runtimes app: this installation's processes and its runtime summary."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from accounts.models import Workspace
from jobs.choices import ProcessRole
from jobs.heartbeats import heartbeat_window
from jobs.models import ProcessHeartbeat
from jobs.registry import registered_types
from jobs.selectors import active_job_count
from matrixcloud.errors import NotFound
from runtimes.detection import detect_runtimes
from runtimes.models import JoinToken, Runtime

# Processes silent for longer than this are left out of /v1/runtimes altogether.
RECENT = timedelta(hours=1)
REQUIRED_ROLES: tuple[str, ...] = (ProcessRole.WORKER, ProcessRole.SANDBOX_HOST)


def recent_processes() -> list[dict[str, Any]]:
    """Processes not stopped that beat in the last hour, each with a ``live`` flag."""
    now = timezone.now()
    live_since = now - heartbeat_window()
    rows = ProcessHeartbeat.objects.filter(
        stopped_at__isnull=True, seen_at__gte=now - RECENT
    ).order_by("role", "-seen_at")
    return [
        {
            "role": row.role,
            "hostname": row.hostname,
            "pid": row.pid,
            "started_at": row.started_at,
            "seen_at": row.seen_at,
            "live": row.seen_at >= live_since,
        }
        for row in rows
    ]


def ago(moment: datetime | None, *, now: datetime | None = None) -> str:
    """A short human age: ``just now``, ``12 s ago``, ``3 min ago``, ``2 h ago``, ``never``."""
    if moment is None:
        return "never"
    seconds = int(((now or timezone.now()) - moment).total_seconds())
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def capabilities_describe() -> dict[str, Any]:
    """``/v1/capabilities``: accepted job types, detected runtimes and the limits."""
    return {
        "capabilities": registered_types(),
        "runtimes": detect_runtimes(),
        "limits": {
            "max_ttl_seconds": settings.MATRIX_MAX_TTL_SECONDS,
            "max_concurrent_jobs": settings.MATRIX_MAX_CONCURRENT_JOBS,
        },
    }


def local_runtime_describe() -> dict[str, Any]:
    """This installation as one entry of ``/v1/runtimes``, with its live processes.

    ``status`` is ``Online`` only when a worker and a sandbox host are both live;
    otherwise jobs or sandboxes would wait forever, so it is ``Degraded``.
    """
    processes = recent_processes()
    live_roles = {process["role"] for process in processes if process["live"]}
    online = all(role in live_roles for role in REQUIRED_ROLES)
    latest = max((process["seen_at"] for process in processes), default=None)
    return {
        "id": settings.MATRIX_RUNTIME_ID,
        "name": settings.MATRIX_RUNTIME_ID,
        "status": "Online" if online else "Degraded",
        "statusClass": "green" if online else "amber",
        "mode": settings.MATRIX_MODE,
        "region": "local",
        "caps": registered_types(),
        "runtimes": detect_runtimes(),
        "jobs": active_job_count(),
        "version": settings.VERSION,
        "heartbeat": ago(latest),
        "live": bool(live_roles),
        "processes": processes,
    }


def runtime_get(*, workspace: Workspace | None, runtime_id: str) -> Runtime:
    """A registered runtime of ``workspace`` (``None``: any); another's is a 404."""
    runtime = Runtime.objects.for_workspace(workspace).filter(pk=runtime_id).first()
    if runtime is None:
        raise NotFound(f"runtime {runtime_id} not found")
    return runtime


def runtimes_list(*, workspace: Workspace | None) -> list[Runtime]:
    """The registered runtimes ``workspace`` may see (``None``: all), newest first."""
    return list(Runtime.objects.for_workspace(workspace).order_by("-created_at", "-pk"))


def runtimes_online(*, workspace: Workspace | None) -> list[Runtime]:
    """The registered runtimes that are online now (heartbeat within the threshold)."""
    return list(Runtime.objects.for_workspace(workspace).online().order_by("-last_seen_at"))


def join_token_get(*, workspace: Workspace | None, token_id: str) -> JoinToken:
    """A join token of ``workspace`` (``None``: any); another's is a 404."""
    token = JoinToken.objects.for_workspace(workspace).filter(pk=token_id).first()
    if token is None:
        raise NotFound(f"join token {token_id} not found")
    return token


def join_tokens_list(
    *, workspace: Workspace | None, include_inactive: bool = False
) -> list[JoinToken]:
    """Join tokens, newest first: active ones only unless ``include_inactive``."""
    tokens = JoinToken.objects.for_workspace(workspace)
    if not include_inactive:
        tokens = tokens.active()
    return list(tokens.order_by("-created_at", "-pk"))
