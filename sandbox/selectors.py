"""Reads for sandboxes: find a session (404 across workspaces), its snapshot, its tools."""

from __future__ import annotations

from typing import Any

from accounts.models import Workspace
from jobs.choices import JobStatus
from matrixcloud.errors import Conflict, NotFound
from matrixcloud.lib.times import rfc3339
from sandbox.models import SandboxSession
from sandbox.services import NOT_READY, ended_message

SESSION_NOT_FOUND = "sandbox session not found"


def session_get(*, session_id: str, workspace: Workspace | None) -> SandboxSession:
    """The session with its job, if ``workspace`` may see it (None: the operator)."""
    sessions = SandboxSession.objects.for_workspace(workspace).select_related("job")
    try:
        return sessions.get(pk=session_id)  # no ORDER BY, unlike .first()
    except SandboxSession.DoesNotExist:
        raise NotFound(SESSION_NOT_FOUND) from None


def events_url(session: SandboxSession) -> str:
    return f"/v1/sandbox/sessions/{session.pk}/events"


def session_result(session: SandboxSession) -> Any:
    """The job's result; once the job has ended (the engine keeps results of complete
    jobs only), the tools the server advertised, as while it ran."""
    if session.job.result is not None:
        return session.job.result
    return {"tools": session.tools} if session.ready else None


def session_snapshot(session: SandboxSession) -> dict[str, Any]:
    """``GET /v1/sandbox/sessions/{id}``: the original's fields, then additive ones.

    Kept on purpose: docs/COMPATIBILITY.md#c-09.
    """
    job = session.job
    snapshot: dict[str, Any] = {
        "session_id": session.pk,
        "job_id": job.pk,
        "status": job.status,
        "expires_at": rfc3339(job.expires_at),
        "result": session_result(session),
        "type": job.type,
        "ready": session.ready,
        "tools_count": len(session.tools),
        "created_at": rfc3339(session.created_at),
        "ready_at": rfc3339(session.ready_at),
        "stopped_at": rfc3339(session.stopped_at),
        "events_url": events_url(session),
    }
    if session.server_info:
        snapshot["server"] = session.server_info
    if session.allow_network or session.egress_allow:
        mode = "open" if session.allow_network else "allowlist"
        snapshot["egress"] = {
            "mode": mode,
            "allow": list(session.egress_allow),
            "denied": session.egress_denied,
        }
    if job.error:
        snapshot["error"] = job.error
    return snapshot


def session_tools(session: SandboxSession) -> list[dict[str, Any]]:
    """The advertised tools; 409 before the server is ready and after the session ended."""
    if session.job.status in JobStatus.terminal():
        raise Conflict(ended_message(session.job.status))
    if not session.ready:
        raise Conflict(NOT_READY)
    return list(session.tools)
