"""The fast route of ``POST /v1/sandbox/sessions/{id}/tools/call`` (matrixcloud/lib/fastroutes.py).

A tool call served by Django (SandboxToolCallView) leaves two facts behind in this
process: who the caller is (their credential's headers → actor, workspace, address)
and where the session runs (its job, host channel, workspace). The next call with the
same credential headers on the same session is answered here, on the event loop, with
no middleware, DRF or database work: the same guard checks (``check_api_request``,
the Host header), the same body parser and serializer, then the host round trip.

Each fact has its own guard against going stale:
- the caller: kept with the credentials generation (matrixcloud/lib/generations.py)
  read before Django authenticated the request; revoking a token, deactivating a user
  or removing a membership bumps it, and the call is sent only if it still reads the
  same, checked on the bus in the same round trip as the send. An entry also ends
  with its token and after :data:`CALLER_TTL` (so Django's idle-expiry touch runs);
- the session: re-read from the database after :data:`SESSION_TTL` (its state and its
  host's heartbeat, :func:`sandbox.services.call_refusal`); meanwhile the host is the
  authority: a session it no longer runs is answered ``ended``, and the entry dropped.

Anything else declines, and Django answers as it always has: a first call, a cookie
(console) caller, a body the serializer refuses, a refused session, another
workspace's session, a caller past its tool-call rate limit (counted here on the bus
in the send's round trip, the same key Django's path counts on: matrixcloud/lib/ratelimit.py).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer

from accounts.principals import Actor
from matrixcloud.api.exceptions import DATABASE_UNAVAILABLE
from matrixcloud.api.parsers import LenientJSONParser
from matrixcloud.errors import error_payload
from matrixcloud.lib import ratelimit
from matrixcloud.lib.fastroutes import Declined, Incoming, Send, send_response, without_length
from matrixcloud.lib.generations import CREDENTIALS, generation_key, generation_read_async
from matrixcloud.lib.lanes import run_in_lane
from matrixcloud.middleware import check_api_request
from sandbox import rpc
from sandbox.api.serializers import ToolCallSerializer
from sandbox.choices import CallFailure
from sandbox.models import SandboxSession
from sandbox.services import PreparedCall, call_refusal, tool_call_failure, tool_call_send_checked

logger = logging.getLogger(__name__)

CALLER_TTL = 30.0  # under accounts.models.SESSION_TOUCH_EVERY (60 s)
SESSION_TTL = 1.0
MAX_ENTRIES = 10_000
ANSWERED = "answered by the fast route"
# scope key: what the fast route read before handing a request to Django.
SCOPE_KEY = "matrixcloud.fastcall"
# The headers that decide who a caller is (besides the peer address).
CALLER_HEADERS = (b"authorization", b"x-matrix-workspace", b"x-forwarded-for")

CallerKey = tuple[str, ...]


@dataclass(frozen=True)
class KnownCaller:
    actor: str
    user_id: str | None
    ip: str
    workspace_id: str | None  # None: the operator, who sees every workspace
    generation: str
    credential: str  # the digest the rate limiter counts a proven credential by
    until: float  # time.monotonic()


@dataclass(frozen=True)
class KnownSession:
    session: SandboxSession
    until: float


_BODY = ToolCallSerializer()
_callers: dict[CallerKey, KnownCaller] = {}
_sessions: dict[str, KnownSession] = {}
# The headers of a 200 answer Django gave on this route (middleware's security headers).
_answer_headers: list[list[tuple[bytes, bytes]]] = []


def caller_key(scope: dict[str, Any]) -> CallerKey | None:
    """The headers that make the caller who they are, or None when a cache must not
    stand for them: a cookie without a bearer token (the console: CSRF-checked), or a
    deciding header sent twice."""
    counts: dict[bytes, list[bytes]] = {}
    cookie = False
    for name, value in scope["headers"]:
        name = name.lower()
        if name in CALLER_HEADERS:
            counts.setdefault(name, []).append(value)
        cookie = cookie or name == b"cookie"
    if any(len(values) > 1 for values in counts.values()):
        return None
    if cookie and not counts.get(b"authorization"):
        return None
    client = scope.get("client") or ("", 0)
    values = [counts.get(name, [b""])[0].decode("latin-1") for name in CALLER_HEADERS]
    return (*values, str(client[0]))


async def tool_call(incoming: Incoming, send: Send) -> None:
    """Answer a call from the caches, or decline (Django answers)."""
    key = caller_key(incoming.scope)
    caller = _callers.get(key) if key is not None else None
    if not _answer_headers or key is None or caller is None or caller.until < time.monotonic():
        await _serve_by_django(incoming, send, key)
        return
    name, arguments = _checked_body(incoming)
    session = await _session(incoming.match["session_id"], caller)
    call = PreparedCall(
        session=session,
        name=name,
        arguments=arguments,
        caller={"actor": caller.actor, "user_id": caller.user_id, "ip": caller.ip},
        ip=caller.ip,
        started_at=timezone.now(),
        started=time.monotonic(),
        refusal=None,
    )
    generation = (generation_key(CREDENTIALS), caller.generation)
    reply = await tool_call_send_checked(call, generation, _meter(caller, call.started_at))
    if reply.get("kind") == rpc.STALE:
        _callers.pop(key, None)
        await _serve_by_django(incoming, send, key)
        return
    if reply.get("kind") == rpc.LIMITED:  # nothing was sent: Django answers the 429
        await _serve_by_django(incoming, send, key)
        return
    await _answer(call, reply, send)
    logger.debug("tool call of %s %s", session.pk, ANSWERED)


def _meter(caller: KnownCaller, now: datetime) -> tuple[str, int, int] | None:
    if caller.credential:
        meter = ratelimit.call_meter(caller.credential)
    else:  # no credential (the local-dev caller): counted by address, as Django counts it
        meter = ratelimit.address_meter(caller.ip)
    if meter is None:
        return None
    return meter.key(now), meter.limit, ratelimit.WINDOW_SECONDS + 5


async def _serve_by_django(incoming: Incoming, send: Send, key: CallerKey | None = None) -> None:
    """Hand the request to Django, leaving it what it needs to fill the caches: the
    caller's key and the generation read before it authenticates."""
    if key is not None:
        generation = await generation_read_async(CREDENTIALS)
        if generation is not None:
            incoming.scope[SCOPE_KEY] = {"key": key, "generation": generation}

    async def keeping(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            if message.get("status") == 200 and not any(
                name.lower() == b"set-cookie" for name, _ in headers
            ):
                _answer_headers[:] = [without_length(headers)]
        await send(message)

    await incoming.forward(keeping)


def _checked_body(incoming: Incoming) -> tuple[str, dict[str, Any]]:
    """The guard's checks and the body as Django's path reads it; else decline."""
    request = ASGIRequest(incoming.scope, io.BytesIO(incoming.body))
    try:
        request.get_host()
    except DisallowedHost as exc:
        raise Declined("the Host header") from exc
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        raise Declined("an HTTPS redirect")
    if check_api_request(request) is not None:
        raise Declined("the API guard refuses it")
    try:
        data = LenientJSONParser().parse(io.BytesIO(incoming.body))
    except Exception as exc:
        raise Declined("the body does not parse") from exc
    try:  # the view's serializer, its fields built once (this runs on one event loop)
        validated = _BODY.run_validation(data)
    except ValidationError as exc:
        raise Declined("the body is refused") from exc
    name = validated["name"].strip()
    if not name:
        raise Declined("no tool name")
    return name, validated.get("arguments") or {}


async def _session(session_id: str, caller: KnownCaller) -> SandboxSession:
    known = _sessions.get(session_id)
    if known is None or known.until < time.monotonic():
        try:
            fresh = await run_in_lane(_session_read, session_id)
        except (OperationalError, InterfaceError) as exc:  # nothing sent: Django says 503
            raise Declined("the database is unavailable") from exc
        if fresh is None:
            _sessions.pop(session_id, None)
            raise Declined("the session is not callable (Django says why)")
        known = _keep(_sessions, session_id, KnownSession(fresh, time.monotonic() + SESSION_TTL))
    if caller.workspace_id is not None and known.session.workspace_id != caller.workspace_id:
        raise Declined("another workspace's session (Django answers 404)")
    return known.session


def _session_read(session_id: str) -> SandboxSession | None:
    session = SandboxSession.objects.select_related("job").filter(pk=session_id).first()
    if session is None or call_refusal(session, session.job) is not None:
        return None
    return session


async def _answer(call: PreparedCall, reply: dict[str, Any], send: Send) -> None:
    headers = _answer_headers[0]
    if reply.get("ok"):
        body = JSONRenderer().render({"ok": True, "result": reply["result"]})
        await send_response(send, 200, headers, body)
        return
    if reply.get("kind") == CallFailure.ENDED:
        _sessions.pop(call.session.pk, None)
    try:
        error = await run_in_lane(tool_call_failure, call, reply)
    except (OperationalError, InterfaceError):  # the call was sent: answer, never resend
        logger.warning("could not record a failed call of %s", call.session.pk, exc_info=True)
        body = JSONRenderer().render(error_payload(DATABASE_UNAVAILABLE, 503))
        await send_response(send, 503, [*headers, (b"retry-after", b"1")], body)
        return
    body = JSONRenderer().render(error_payload(error.message, error.http_status))
    await send_response(send, error.http_status, headers, body)


def remember(request: HttpRequest, actor: Actor, session: SandboxSession) -> None:
    """After Django's path accepted a call: keep the caller and the session for the
    fast route (only for a request the fast route handed over, with its key)."""
    handed = getattr(request, "scope", {}).get(SCOPE_KEY)
    if not handed:
        return
    monotonic = time.monotonic()
    until = monotonic + CALLER_TTL
    if actor.session is not None:
        token = actor.session
        ends = min(token.expires_at, token.idle_expires_at)
        until = min(until, monotonic + (ends - timezone.now()).total_seconds())
    workspace = actor.visible_workspace
    caller = KnownCaller(
        actor=actor.id,
        user_id=str(actor.user.pk) if actor.user is not None else None,
        ip=actor.ip,
        workspace_id=workspace.pk if workspace is not None else None,
        generation=handed["generation"],
        credential=ratelimit.claimed_credential(request),
        until=until,
    )
    _keep(_callers, handed["key"], caller)
    _keep(_sessions, session.pk, KnownSession(session, monotonic + SESSION_TTL))


def _keep(table: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(table) >= MAX_ENTRIES:
        table.clear()
    table[key] = value
    return value
