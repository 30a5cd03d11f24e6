"""Writes for sandboxes: create and stop sessions, call their tools, record the calls.

A session is a session-kind job (``mcp.test`` by default) created through the job
engine's own ``job_enqueue``, plus a :class:`~sandbox.models.SandboxSession` row in the
same transaction; the engine dispatches it to the sandbox hosts after commit. A tool
call is a bus RPC to the host that runs the session (``Job.runner``); that host records
the calls it handles, this module the ones that never reached a host.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.audit import AuditEntry, audit_record, audit_record_many
from accounts.choices import AuditStatus, UsageKind
from accounts.models import Workspace
from accounts.principals import Actor
from accounts.services.usage import Usage, usage_record_many
from jobs.choices import JobStatus
from jobs.models import Job
from jobs.services import job_await_terminal, job_cancel, job_enqueue
from matrixcloud.errors import ApplicationError, Conflict, ServiceUnavailable
from sandbox import policy, rpc
from sandbox.choices import CallFailure, ToolCallOutcome
from sandbox.handlers import session_params
from sandbox.models import SandboxSession, ToolCall

DEFAULT_SESSION_TYPE = "mcp.test"
REDACTED = "[redacted]"
MAX_STORED_ARGUMENT_BYTES = 64 * 1024
# A host heart-beats its sessions' jobs every 2 s; this much silence means it is gone.
HOST_SILENT_AFTER = 8.0
ENDING_WAIT = 2.0  # a call ended by its session's stop waits this long to say how it ended
NOT_READY = "sandbox not ready"
REFUSED_HERE = "refused"  # a reply kind: the call was never sent (not ready, ended, host gone)
FAILED_OUTCOMES = frozenset(
    {ToolCallOutcome.PROTOCOL_ERROR, ToolCallOutcome.TIMEOUT, ToolCallOutcome.REFUSED}
)


def ended_message(status: str) -> str:
    return f"sandbox session has ended ({status})"


# --- sessions -----------------------------------------------------------------------


def sandbox_create(
    *,
    actor: Actor,
    start_command: str,
    env: Mapping[str, str] | None,
    ttl_seconds: int | None,
    transport: str = "",
    allow_network: bool = False,
    network_allow: Sequence[str] = (),
    job_type: str = DEFAULT_SESSION_TYPE,
) -> SandboxSession:
    """Check the payload once (command, env, transport, network, egress list: 422 each,
    as the rule words it), then write the job, its session and the audit record in one
    transaction; the job engine checks the TTL and the env's secret references (403,
    audited outside that transaction) and dispatches the job to a host after commit. The
    host checks the policy once more just before it starts the server."""
    requested = {
        "start_command": start_command,
        "env": dict(env or {}),
        "transport": transport,
        "allow_network": allow_network,
        "network_allow": list(network_allow),
    }
    params = session_params(job_type, requested)
    payload: dict[str, Any] = {
        "start_command": params.start_command,
        "env": params.env,
        "transport": params.transport or "stdio",
        "allow_network": params.allow_network,
    }
    if params.network_allow:
        payload["network_allow"] = params.network_allow
    sessions: list[SandboxSession] = []

    def with_session(job: Job) -> None:
        session = session_ensure(job)
        audit_record(
            action="sandbox.created",
            actor=actor.id,
            workspace=actor.workspace,
            target=session.pk,
            ip=actor.ip,
            meta={"job_id": job.pk, "type": job_type, "program": session.argv[0]},
        )
        sessions.append(session)

    job_enqueue(
        actor=actor,
        job_type=job_type,
        payload=payload,
        ttl_seconds=ttl_seconds,
        checked=True,
        within=with_session,
    )
    return sessions[0]


def session_ensure(job: Job) -> SandboxSession:
    """The session row of a session job, created from its payload when missing (a
    ``mcp.test`` created through ``POST /v1/jobs`` gets one when a host claims it)."""
    payload = job.payload or {}
    command = str(payload.get("start_command", ""))
    session, created = SandboxSession.objects.get_or_create(
        job=job,
        defaults={
            "workspace_id": job.workspace_id,
            "created_by_id": job.created_by_id,
            "start_command": command,
            "argv": policy.command_split(command),  # checked when the job was created
            "env": dict(payload.get("env") or {}),
            "allow_network": bool(payload.get("allow_network")),
            "created_at": job.created_at,
        },
    )
    if created:  # metered once per session, whichever way it was created
        usage_record_many([
            Usage(
                workspace_id=job.workspace_id,
                kind=UsageKind.SANDBOX_START,
                user_id=job.created_by_id,
                meta={"session_id": session.pk, "type": job.type},
            )
        ])  # fmt: skip
    return session


def sandbox_stop(*, session: SandboxSession, actor: Actor) -> str:
    """Cancel the session's job (its host stops the server); the status afterwards."""
    return job_cancel(job=session.job, actor=actor)


# --- tool calls ---------------------------------------------------------------------


def sandbox_tool_call(
    *,
    session: SandboxSession,
    name: str,
    arguments: dict[str, Any] | None,
    actor: Actor,
) -> dict[str, Any]:
    """Call ``name`` on the session's server through its host; the raw MCP result.

    Raises :class:`Conflict` (409) when the session is not ready, has ended, or the call
    failed at the MCP level or timed out, and :class:`ServiceUnavailable` when the bus
    is down. The host records the calls it handled; the others are recorded here.
    """
    call = tool_call_prepare(session=session, name=name, arguments=arguments, actor=actor)
    return tool_call_result(call, tool_call_send(call))


@dataclass(frozen=True)
class PreparedCall:
    """A tool call checked and ready to send (or refused here, with the reason)."""

    session: SandboxSession
    name: str
    arguments: dict[str, Any]
    caller: dict[str, Any]
    ip: str
    started_at: datetime
    started: float
    refusal: str | None

    def rpc_kwargs(self) -> dict[str, Any]:
        job = self.session.job
        return {
            "channel": job.runner,
            "job_id": job.pk,
            "name": self.name,
            "arguments": self.arguments,
            "caller": self.caller,
            "timeout": settings.MATRIX_SANDBOX_CALL_HARD_CAP + rpc.REPLY_MARGIN,
        }

    def refused(self) -> dict[str, Any]:
        return {"ok": False, "kind": REFUSED_HERE, "error": self.refusal}


def tool_call_prepare(
    *,
    session: SandboxSession,
    name: str,
    arguments: dict[str, Any] | None,
    actor: Actor,
) -> PreparedCall:
    """The call to send, checked against the session's state (read in this request)."""
    return PreparedCall(
        session=session,
        name=name,
        arguments=arguments or {},
        caller={"actor": actor.id, "user_id": getattr(actor.user, "pk", None), "ip": actor.ip},
        ip=actor.ip,
        started_at=timezone.now(),
        started=time.monotonic(),
        refusal=call_refusal(session, session.job),
    )


def tool_call_send(call: PreparedCall) -> dict[str, Any]:
    """The host's reply (blocking this thread), or our own refusal."""
    if call.refusal is not None:
        return call.refused()
    return rpc.host_call(**call.rpc_kwargs())


async def tool_call_send_async(call: PreparedCall) -> dict[str, Any]:
    """The host's reply awaited on the event loop (no thread held), or our own refusal."""
    if call.refusal is not None:
        return call.refused()
    return await rpc.host_call_async(**call.rpc_kwargs())


async def tool_call_send_checked(
    call: PreparedCall,
    generation: tuple[str, str],
    meter: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    """:func:`tool_call_send_async` for a caller known from a cache: sent only while
    ``generation`` (key, value) still holds on the bus, else an ``rpc.STALE`` failure;
    counted on ``meter`` (key, limit, TTL) in the same round trip, ``rpc.LIMITED``
    past its limit."""
    return await rpc.host_call_async(**call.rpc_kwargs(), generation=generation, meter=meter)


def tool_call_result(call: PreparedCall, reply: dict[str, Any]) -> dict[str, Any]:
    """The MCP result of a successful reply; otherwise record the failure (when the host
    did not) and raise :class:`Conflict`, or :class:`ServiceUnavailable` for the bus."""
    if reply.get("ok"):
        return dict(reply["result"])
    raise tool_call_failure(call, reply)


def tool_call_failure(call: PreparedCall, reply: dict[str, Any]) -> ApplicationError:
    """The error a failed reply answers with, the call recorded when the host did not."""
    message = _failure_message(call.session, reply)
    if not reply.get("recorded"):
        timed_out = reply.get("kind") == CallFailure.TIMEOUT
        entry = CallEntry(
            session=call.session,
            name=call.name,
            arguments=call.arguments,
            actor=call.caller["actor"],
            user_id=call.caller["user_id"],
            ip=call.ip,
            started_at=call.started_at,
            outcome=ToolCallOutcome.TIMEOUT if timed_out else ToolCallOutcome.REFUSED,
            duration_ms=monotonic_ms(call.started),
            error=message,
        )
        tool_calls_record([entry])
    if reply.get("kind") == rpc.BUS_DOWN:
        return ServiceUnavailable(message)
    return Conflict(message)


def call_refusal(session: SandboxSession, job: Job) -> str | None:
    """Why a call cannot be sent at all, or None."""
    if job.status in JobStatus.terminal():
        return ended_message(job.status)
    if session.ready_at is None or job.status != JobStatus.RUNNING or not job.runner:
        return NOT_READY
    silent = (timezone.now() - job.heartbeat_at).total_seconds() if job.heartbeat_at else 0
    if silent > HOST_SILENT_AFTER:
        return f"the sandbox host stopped answering ({int(silent)} s without a heartbeat)"
    return None


def _failure_message(session: SandboxSession, reply: dict[str, Any]) -> str:
    """What a 409 says about a failed reply: the session's end, or the reason given."""
    kind = reply.get("kind")
    if kind == CallFailure.ENDED:  # the host is stopping it: say how it ended, when it has
        status = job_await_terminal(session.job_id, JobStatus.RUNNING, timeout=ENDING_WAIT)
        return ended_message(status if status in JobStatus.terminal() else "stopping")
    if kind == CallFailure.NOT_READY:
        return NOT_READY
    return str(reply.get("error") or "the tool call failed")


def redact(value: Any) -> Any:
    """``value`` with every entry whose key looks like a secret replaced (recursively)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if policy.SECRET_KEY_PATTERN.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def stored_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The redacted arguments as stored: bounded in size (a summary past the bound)."""
    redacted = redact(arguments)
    size = len(json.dumps(redacted, default=str))
    if size > MAX_STORED_ARGUMENT_BYTES:
        return {"_truncated": True, "bytes": size, "keys": sorted(map(str, redacted))[:50]}
    return redacted


@dataclass(frozen=True)
class CallEntry:
    """One tool call to record: who, which tool, how it went. ``result`` is only
    measured (its JSON size is stored), never kept."""

    session: SandboxSession
    name: str
    arguments: Any
    actor: str
    user_id: str | None
    ip: str
    started_at: datetime
    outcome: str
    duration_ms: int = 0
    error: str = ""
    result: Any = None
    detached: bool = False  # the session row is gone: keep only its id

    def to_row(self) -> ToolCall:
        arguments = self.arguments
        if not isinstance(arguments, dict):
            arguments = {"_arguments": repr(arguments)[:1000]}
        return ToolCall(
            session=None if self.detached else self.session,
            session_ref=self.session.pk,
            workspace_id=self.session.workspace_id,
            user_id=self.user_id or None,
            actor=self.actor[:254],
            tool=self.name[:256],
            arguments=stored_arguments(arguments),
            started_at=self.started_at,
            duration_ms=max(self.duration_ms, 0),
            outcome=self.outcome,
            error=self.error[:10_000],
            result_bytes=len(json.dumps(self.result, default=str)) if self.result else 0,
        )


def tool_calls_record(entries: list[CallEntry]) -> list[ToolCall]:
    """Record tool calls and audit each (``sandbox.tool_call``), in one transaction
    (a host writes the calls it handled in batches; the audit rows in one append)."""
    with transaction.atomic():
        entries = _still_recordable(entries)
        calls = ToolCall.objects.bulk_create([entry.to_row() for entry in entries])
        audit_record_many(
            [
                AuditEntry(
                    action="sandbox.tool_call",
                    actor=entry.actor,
                    workspace=entry.session.workspace_id,
                    target=entry.session.pk,
                    ip=entry.ip,
                    status=(
                        AuditStatus.FAILURE
                        if call.outcome in FAILED_OUTCOMES
                        else AuditStatus.SUCCESS
                    ),
                    meta={
                        "tool": call.tool,
                        "outcome": call.outcome,
                        "duration_ms": call.duration_ms,
                    },
                )
                for entry, call in zip(entries, calls, strict=True)
            ]
        )
        usage_record_many(_tool_call_usage(calls))
    return calls


def _tool_call_usage(calls: list[ToolCall]) -> list[Usage]:
    """One usage event per workspace and user for the calls that reached a server."""
    counts: dict[tuple[str, str | None], int] = {}
    for call in calls:
        if call.outcome != ToolCallOutcome.REFUSED:
            key = (call.workspace_id, call.user_id)
            counts[key] = counts.get(key, 0) + 1
    return [
        Usage(workspace_id=workspace_id, kind=UsageKind.TOOL_CALL, quantity=n, user_id=user_id)
        for (workspace_id, user_id), n in counts.items()
    ]


def _still_recordable(entries: list[CallEntry]) -> list[CallEntry]:
    """Entries whose workspace still exists, detached from sessions deleted meanwhile
    (``session_ref`` keeps the id): a batch written later must not fail on them."""
    workspaces = {entry.session.workspace_id for entry in entries}
    sessions = {entry.session.pk for entry in entries}
    live_workspaces = set(Workspace.objects.filter(pk__in=workspaces).values_list("pk", flat=True))
    live_sessions = set(SandboxSession.objects.filter(pk__in=sessions).values_list("pk", flat=True))
    kept = []
    for entry in entries:
        if entry.session.workspace_id not in live_workspaces:
            continue
        if entry.session.pk not in live_sessions:
            detached = SandboxSession(pk=entry.session.pk, workspace_id=entry.session.workspace_id)
            entry = replace(entry, session=detached, detached=True)
        kept.append(entry)
    return kept


def monotonic_ms(since: float) -> int:
    """Milliseconds from ``since`` (``time.monotonic()``) to now."""
    return int((time.monotonic() - since) * 1000)
