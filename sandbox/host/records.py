"""The host's reads and writes of job, session and fingerprint rows.

Plain synchronous ORM functions; the host runs them through ``sync_to_async`` (one
database thread), so each does one short transaction. Events go through the job
engine's ``job_event_emit`` and terminal transitions through ``job_finish``, so the
host follows the same rules as a worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django import db
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from jobs import registry
from jobs.choices import JobKind, JobStatus
from jobs.events import job_event_emit
from jobs.models import Job
from jobs.services import job_claim, job_finish
from sandbox.handlers import SessionHandler
from sandbox.models import SandboxSession, ToolFingerprint, command_key
from sandbox.services import session_ensure

logger = logging.getLogger(__name__)
# (step, status, message, data)
Event = tuple[str, str, str, dict[str, Any] | None]
MAX_NAMES_IN_MESSAGE = 10
MAX_NAMES_IN_DATA = 200
T = TypeVar("T")


@dataclass(frozen=True)
class Claimed:
    """A session job this host now runs: the job, its row and its handler class."""

    job: Job
    session: SandboxSession | None
    handler: type[SessionHandler] | None
    problem: str = ""


def session_claim(job_id: str, *, runner: str) -> Claimed | None:
    """Claim a queued session job for ``runner``; None if not queued or not a session.

    A job whose type has no session handler, or whose command no longer passes the
    policy, is still claimed (so it ends once, here) with ``problem`` saying why.
    """
    kind = Job.objects.filter(pk=job_id).values_list("kind", flat=True).first()
    if kind != JobKind.SESSION:
        return None
    job = job_claim(job_id, runner=runner)
    if job is None:
        return None
    handler = registry.handler_for(job.type)
    if handler is None or not issubclass(handler, SessionHandler):
        return Claimed(job, None, None, f'unknown session job type: "{job.type}"')
    try:
        session = session_ensure(job)
    except Exception as exc:  # a payload the policy no longer accepts
        return Claimed(job, None, handler, f"invalid payload: {exc}")
    return Claimed(job, session, handler)


async def run(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run one of these functions on the host's database thread.

    Shielded: a caller cancelled meanwhile (a session stopped in mid-write) returns at
    once while the write finishes on its own, so cancellation never enters asgiref's
    path for a running thread (which waits on the thread and on any async_to_sync task
    it started: a host once hung there until shutdown). Writes stay in order: there is
    one database thread.
    """
    task = asyncio.ensure_future(sync_to_async(_reconnecting)(fn, *args, **kwargs))
    task.add_done_callback(_retrieved)
    return await asyncio.shield(task)


def _reconnecting(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn`` on the database thread; a connection the database dropped (a restart) is
    closed on the way out, so the next call connects again instead of failing forever."""
    try:
        return fn(*args, **kwargs)
    except (db.OperationalError, db.InterfaceError):
        db.connection.close()
        raise


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned write's outcome as seen; log a failure nobody awaited."""
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.debug("a database write of the host failed: %r", error)


def events_emit(job_id: str, events: list[Event]) -> None:
    """Append ``events`` to the job in one transaction (one commit, one publish each);
    nothing once the job has ended (its terminal event must stay the last)."""
    with transaction.atomic():
        if not Job.objects.filter(pk=job_id, status__in=JobStatus.active()).exists():
            return
        for step, status, message, data in events:
            job_event_emit(job_id, step=step, status=status, message=message, data=data)


def session_ready(
    session_id: str, *, tools: list[dict[str, Any]], fingerprints: dict[str, str],
    server: dict[str, Any], events: list[Event],
) -> None:  # fmt: skip
    """Store the tools (row and job result), compare them with what the same command
    advertised before in the workspace, and emit ``events`` with a ``tools_changed``
    before the last one (``ready``) when they differ."""
    with transaction.atomic():
        session = SandboxSession.objects.select_for_update().get(pk=session_id)
        now = timezone.now()
        SandboxSession.objects.filter(pk=session_id).update(
            tools=tools, server_info=server, ready_at=now
        )
        Job.objects.filter(pk=session.job_id, status=JobStatus.RUNNING).update(
            result={"tools": tools}
        )
        change = fingerprint_update(session, fingerprints)
        if change is not None:
            events = [*events[:-1], change, events[-1]]
        events_emit(session.job_id, events)


def session_egress(session_id: str, *, allow: list[str]) -> None:
    """The allowlist the session's egress proxy enforces, on its row."""
    SandboxSession.objects.filter(pk=session_id).update(egress_allow=allow)


def session_egress_denied(session_id: str, job_id: str, *, count: int, event: Event | None) -> None:
    """``count`` more refused connections, and the event of the last (None past the cap)."""
    SandboxSession.objects.filter(pk=session_id).update(egress_denied=F("egress_denied") + count)
    if event is not None:
        events_emit(job_id, [event])


def session_tools_changed(
    session_id: str, *, tools: list[dict[str, Any]], fingerprints: dict[str, str]
) -> None:
    """The server re-listed its tools (list_changed): store them and say what changed."""
    with transaction.atomic():
        session = SandboxSession.objects.select_for_update().get(pk=session_id)
        SandboxSession.objects.filter(pk=session_id).update(tools=tools)
        Job.objects.filter(pk=session.job_id, status=JobStatus.RUNNING).update(
            result={"tools": tools}
        )
        change = fingerprint_update(session, fingerprints)
        if change is not None:
            events_emit(session.job_id, [change])


def fingerprint_update(session: SandboxSession, fingerprints: dict[str, str]) -> Event | None:
    """Save the command's fingerprints; the ``tools_changed`` event if they differ from
    the last ones (the first sight of a command has nothing to compare with)."""
    row, created = ToolFingerprint.objects.select_for_update().get_or_create(
        workspace_id=session.workspace_id,
        command_key=command_key(session.argv),
        defaults={"fingerprints": fingerprints},
    )
    if created:
        return None
    before = dict(row.fingerprints)
    ToolFingerprint.objects.filter(pk=row.pk).update(
        fingerprints=fingerprints, updated_at=timezone.now()
    )
    return tools_changed_event(before, fingerprints)


def tools_changed_event(before: dict[str, str], after: dict[str, str]) -> Event | None:
    """``tools_changed`` naming what was added, removed and changed; None if nothing."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(after) & set(before) if after[name] != before[name])
    if not (added or removed or changed):
        return None
    parts = [
        _names(label, names)
        for label, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    data = {
        "added": added[:MAX_NAMES_IN_DATA],
        "removed": removed[:MAX_NAMES_IN_DATA],
        "changed": changed[:MAX_NAMES_IN_DATA],
    }
    message = "Tools differ from what this command advertised before: " + "; ".join(parts)
    return ("tools_changed", "ok", message, data)


def _names(label: str, names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    more = len(names) - MAX_NAMES_IN_MESSAGE
    return f"{len(names)} {label} ({shown}{f', and {more} more' if more > 0 else ''})"


def session_finish(
    job_id: str, session_id: str | None, status: str, *, result: Any = None,
    error: str = "", events: list[Event] | None = None,
) -> bool:  # fmt: skip
    """Mark the session stopped and end its job (``events`` first); False if the job had
    already ended (the janitor, or a cancel of a queued job)."""
    with transaction.atomic():
        if session_id:
            SandboxSession.objects.filter(pk=session_id).update(stopped_at=timezone.now())
        if events:
            events_emit(job_id, events)
    return job_finish(job_id, status, result=result, error=error)


def sessions_watch(job_ids: list[str], *, beat: bool) -> dict[str, bool]:
    """For each running job of this host: whether it should stop (cancel requested, or
    no longer running). With ``beat``, heart-beat the running ones first."""
    if not job_ids:
        return {}
    if beat:
        Job.objects.filter(pk__in=job_ids, status=JobStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )
    rows = Job.objects.filter(pk__in=job_ids).values_list("pk", "status", "cancel_requested_at")
    states = {pk: status != JobStatus.RUNNING or cancel is not None for pk, status, cancel in rows}
    return {job_id: states.get(job_id, True) for job_id in job_ids}


def queued_sessions(*, older_than: timedelta, limit: int) -> list[str]:
    """Session jobs still queued ``older_than`` after creation: their start message was
    lost (no host was listening, or the bus dropped it)."""
    due: datetime = timezone.now() - older_than
    jobs = Job.objects.filter(kind=JobKind.SESSION, status=JobStatus.QUEUED, created_at__lt=due)
    return list(jobs.order_by("created_at").values_list("pk", flat=True)[:limit])
