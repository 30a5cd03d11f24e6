"""Reads for sandboxes: find a session (404 across workspaces), its result, its tools."""

from __future__ import annotations

from typing import Any

from accounts.models import Workspace
from jobs.choices import JobStatus
from matrixcloud.errors import Conflict, NotFound
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


def session_tools(session: SandboxSession) -> list[dict[str, Any]]:
    """The advertised tools; 409 before the server is ready and after the session ended."""
    if session.job.status in JobStatus.terminal():
        raise Conflict(ended_message(session.job.status))
    if not session.ready:
        raise Conflict(NOT_READY)
    return list(session.tools)
