"""Tool calls in a host: one call on a session's client, as a ``sandbox.reply`` body.

Every failure is a reply, never an exception: ``kind`` says what happened (the web
turns it into a 409 with ``error``) and ``outcome`` is what the call's row records.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.conf import settings

from sandbox.choices import CallFailure, ToolCallOutcome
from sandbox.mcp import McpClient, McpClosed, McpError, McpTimeout
from sandbox.models import SandboxSession
from sandbox.services import CallEntry

REFUSED = ToolCallOutcome.REFUSED


def failure(kind: str, error: str, outcome: str, started: float | None = None) -> dict[str, Any]:
    """A negative ``sandbox.reply`` body (``outcome`` is what the call row records)."""
    reply: dict[str, Any] = {"ok": False, "kind": kind, "error": error, "outcome": outcome}
    if started is not None:
        reply["duration_ms"] = int((time.monotonic() - started) * 1000)
    return reply


async def tool_call(client: McpClient, name: str, arguments: Any) -> dict[str, Any]:
    """Call ``name`` with the configured timeout and hard cap; the reply body."""
    started = time.monotonic()
    if not isinstance(arguments, dict):
        return failure(CallFailure.PROTOCOL_ERROR, "arguments must be an object", REFUSED)
    try:
        result = await client.call_tool(
            name,
            arguments,
            timeout=settings.MATRIX_SANDBOX_CALL_TIMEOUT,
            hard_cap=settings.MATRIX_SANDBOX_CALL_HARD_CAP,
        )
    except McpTimeout as exc:
        return failure(CallFailure.TIMEOUT, str(exc), ToolCallOutcome.TIMEOUT, started)
    except McpClosed:
        return failure(CallFailure.ENDED, "sandbox session has ended", REFUSED, started)
    except McpError as exc:
        outcome = ToolCallOutcome.PROTOCOL_ERROR
        return failure(CallFailure.PROTOCOL_ERROR, str(exc), outcome, started)
    outcome = ToolCallOutcome.TOOL_ERROR if result.get("isError") else ToolCallOutcome.OK
    duration_ms = int((time.monotonic() - started) * 1000)
    return {"ok": True, "result": result, "duration_ms": duration_ms, "outcome": outcome}


def call_entry(
    session: SandboxSession, name: str, arguments: Any, caller: dict[str, Any],
    started_at: datetime, reply: dict[str, Any],
) -> CallEntry:  # fmt: skip
    """What to record of a call this host answered with ``reply``."""
    return CallEntry(
        session=session,
        name=name,
        arguments=arguments,
        actor=str(caller.get("actor") or "unknown"),
        user_id=caller.get("user_id") or None,
        ip=str(caller.get("ip") or ""),
        started_at=started_at,
        outcome=reply["outcome"],
        duration_ms=int(reply.get("duration_ms") or 0),
        error=str(reply.get("error") or ""),
        result=reply.get("result"),
    )
