"""The session job types: ``mcp.test``, ``mcp.run`` and ``tool.run``.

They are registered with the job engine so ``POST /v1/jobs`` accepts them (their
payload is checked at creation: a rejected command or env is a 422 naming the field)
and ``/v1/capabilities`` lists them. They are ``kind = session``: the engine announces
them on the bus and a sandbox host runs them (sandbox/host/), so ``run()`` is never
called by a worker. What the host does after the server is ready depends on
``one_shot``: keep it for the TTL (``mcp.test``, ``mcp.run``) or call one tool, return
its result and stop (``tool.run``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db.models import F
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from accounts.models import Workspace
from accounts.principals import Actor
from jobs.choices import JobKind, JobStatus
from jobs.handlers import BaseHandler, JobFailed, JobParams
from jobs.models import Job
from jobs.registry import register
from jobs.services import payload_params
from matrixcloud.errors import ApplicationError, BadRequest, RateLimited, UnprocessableEntity
from sandbox import policy
from sandbox.egress import EgressRefused, requested_check
from sandbox.errors import SessionRefused
from sandbox.policy import ALLOWED_TRANSPORTS, CommandRejected, EnvRejected
from sandbox.secrets import secrets_admit


def transport_check(transport: str) -> None:
    """Only stdio is spoken; an empty transport means stdio (docs/COMPATIBILITY.md#c-09)."""
    if transport and transport not in ALLOWED_TRANSPORTS:
        raise SessionRefused(f'unsupported transport "{transport}" (only stdio is supported)')


def network_check(allow_network: bool) -> None:
    """A session may ask for network only where the installation allows it."""
    if allow_network and not settings.MATRIX_SANDBOX_ALLOW_NETWORK:
        raise SessionRefused(
            "allow_network is refused: sandboxes run without network on this installation "
            "(MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK)"
        )


def _refusal(exc: Exception) -> PydanticCustomError:
    # The message goes in as context: a template would treat "{...}" in it as fields. The
    # refusal itself rides along, so a caller can raise it as the rule worded it.
    return PydanticCustomError("sandbox_policy", "{reason}", {"reason": str(exc), "refusal": exc})


class McpServerParams(JobParams):
    """An MCP server to start: the command (checked against the command policy), its
    env (secret references only for secret-looking keys), the transport (stdio) and
    whether it may use the network. ``runtime`` is accepted and ignored, as before."""

    start_command: str
    env: dict[str, str] = Field(default_factory=dict)
    transport: str = ""
    runtime: str = ""
    allow_network: bool = False
    network_allow: list[str] = Field(default_factory=list)

    @field_validator("env", mode="before")
    @classmethod
    def _env_absent(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("start_command")
    @classmethod
    def _command(cls, value: str) -> str:
        try:
            policy.command_validate(value)
        except CommandRejected as exc:
            raise _refusal(exc) from exc
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            policy.env_validate(value)
        except EnvRejected as exc:
            raise _refusal(exc) from exc
        return value

    @field_validator("transport")
    @classmethod
    def _transport(cls, value: str) -> str:
        try:
            transport_check(value)
        except SessionRefused as exc:
            raise _refusal(exc) from exc
        return value

    @field_validator("network_allow", mode="before")
    @classmethod
    def _network_allow(cls, value: Any) -> Any:
        if value is None:
            return []
        try:
            return requested_check(value if isinstance(value, list) else [value])
        except EgressRefused as exc:
            raise _refusal(exc) from exc

    @field_validator("allow_network")
    @classmethod
    def _network(cls, value: bool) -> bool:
        try:
            network_check(value)
        except SessionRefused as exc:
            raise _refusal(exc) from exc
        return value


class ToolRunParams(McpServerParams):
    """A server to start and the one tool to call on it, with its arguments."""

    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments_absent(cls, value: Any) -> Any:
        return {} if value is None else value


class SessionHandler(BaseHandler):
    """Base of the session types: run by a sandbox host, never by a worker."""

    kind: ClassVar[str] = JobKind.SESSION
    Params: ClassVar[type[JobParams]] = McpServerParams
    # True: call one tool once ready, finish complete with its result, stop.
    one_shot: ClassVar[bool] = False

    def run(self) -> Any:
        raise JobFailed(f"{self.ctx.job.type} jobs run in a sandbox host, not in a worker")

    @classmethod
    def admit(cls, *, actor: Actor, payload: dict[str, Any]) -> None:
        """A Member may not reference a credential not marked usable by members (403)."""
        secrets_admit(actor=actor, env=payload.get("env") or {})

    @classmethod
    def reserve(cls, *, workspace: Any) -> None:
        """At most ``MATRIX_RUNTIME_SANDBOX_MAX_PER_WORKSPACE`` live sandboxes per workspace
        (429). The workspace row is written first, so concurrent creates in one workspace
        queue behind each other (its row lock on PostgreSQL, the write lock on SQLite)
        and each counts what the others committed."""
        cap = settings.MATRIX_SANDBOX_MAX_PER_WORKSPACE
        if not cap:
            return
        Workspace.objects.filter(pk=workspace.pk).update(slug=F("slug"))
        live = Job.objects.filter(
            workspace=workspace, kind=JobKind.SESSION, status__in=JobStatus.active()
        ).count()
        if live >= cap:
            raise RateLimited(
                f"this workspace already has {live} live sandboxes, the most it may have "
                f"(MATRIX_RUNTIME_SANDBOX_MAX_PER_WORKSPACE={cap}): stop one "
                "(DELETE /v1/sandbox/sessions/{id}) or wait for one to end",
                retry_after=5,
            )


@register("mcp.test")
class McpTestHandler(SessionHandler):
    """Start an MCP server in a sandbox, list its tools, keep it for calls until the TTL
    or a cancel (the sandbox API's sessions are these jobs)."""


@register("mcp.run")
class McpRunHandler(SessionHandler):
    """Keep an MCP server running in a sandbox for its TTL, for agents to call."""


@register("tool.run")
class ToolRunHandler(SessionHandler):
    """Start an MCP server, call one tool with the given arguments, finish ``complete``
    with ``{"result": <MCP result>}`` and stop the server."""

    Params = ToolRunParams
    one_shot = True


def session_params(job_type: str, payload: dict[str, Any]) -> McpServerParams:
    """A session's payload read by its type's Params model: the one check at creation of
    the command policy, env rules, transport, network and egress list. A rule's refusal
    is raised as itself (its 422, worded as the original worded it); anything else as
    the job engine words a bad payload."""
    try:
        params = payload_params(job_type, payload)
    except UnprocessableEntity as exc:
        cause = exc.__cause__
        context = cause.errors()[0].get("ctx") if isinstance(cause, ValidationError) else None
        refusal = (context or {}).get("refusal")
        if isinstance(refusal, ApplicationError):
            raise refusal from cause
        raise
    if not isinstance(params, McpServerParams):
        raise BadRequest(f'not a sandbox job type: "{job_type}"')
    return params
