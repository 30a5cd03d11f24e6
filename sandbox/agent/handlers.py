"""The ``agent.run`` job type: its payload and the handler a sandbox host drives.

The payload is an MCP server (as for ``tool.run``: command policy, env rules,
network) plus the prompt, the endpoint (``installation_id``, ``base_url`` or a
provider credential: sandbox/agent/endpoint.py), the model and the limits, all
checked at creation (a 422 naming the field; ``base_url`` by the egress guard too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from accounts.principals import Actor
from accounts.services.providers import provider_use_check
from jobs.handlers import JobParams
from jobs.registry import register
from sandbox.agent.endpoint import url_check
from sandbox.handlers import McpServerParams, SessionHandler

if TYPE_CHECKING:
    from sandbox.host.session import LiveSession

MAX_STEPS = 50
MAX_TOKENS = 2_000_000
MAX_SECONDS = 3600.0


class AgentRunParams(McpServerParams):
    """An MCP server, a prompt, the model and its endpoint, and the run's limits."""

    prompt: str = Field(min_length=1, max_length=100_000)
    system: str = Field("", max_length=100_000)
    model: str = Field("", max_length=200)
    base_url: str = Field("", max_length=1000)
    installation_id: str = Field("", max_length=64)
    provider: str = Field("openai", min_length=1, max_length=64)
    credential: str = Field("default", min_length=1, max_length=64)
    tools: list[str] | None = None
    max_steps: int = Field(8, ge=1, le=MAX_STEPS)
    max_tokens: int = Field(100_000, ge=1, le=MAX_TOKENS)
    max_seconds: float = Field(120.0, gt=0, le=MAX_SECONDS)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        """Shape and, for an address or ``localhost``, the egress guard's rules: a URL
        naming this server's API, bus, database or a metadata address is a 422 now."""
        try:
            return url_check(value) if value else value
        except ValueError as exc:
            raise PydanticCustomError("url_refused", str(exc)) from None

    @field_validator("provider", "credential", "system", "model", "base_url", mode="before")
    @classmethod
    def _absent(cls, value: Any, info: Any) -> Any:
        defaults = {"provider": "openai", "credential": "default"}
        return defaults.get(info.field_name, "") if value is None else value


@register("agent.run")
class AgentRunHandler(SessionHandler):
    """Start an MCP server in a sandbox, let a model use its tools until it answers
    (or a limit stops it), finish ``complete`` with ``{output, steps, usage}``, stop."""

    Params: ClassVar[type[JobParams]] = AgentRunParams

    @classmethod
    def admit(cls, *, actor: Actor, payload: dict[str, Any]) -> None:
        """Its env, and the provider credential it would send a prompt with (neither
        ``base_url`` nor ``installation_id``): a Member may use only one marked usable
        by members, like a ``${secret:...}`` (403 naming it)."""
        super().admit(actor=actor, payload=payload)
        if payload.get("base_url") or payload.get("installation_id"):
            return
        provider_use_check(
            actor=actor,
            provider=payload.get("provider") or "openai",
            label=payload.get("credential") or "default",
            purpose="agent.run",
        )

    @staticmethod
    async def drive(session: LiveSession, params: McpServerParams) -> dict[str, Any]:
        """The host's hook once the session is ready: run the loop on it."""
        from sandbox.agent.loop import AgentLoop

        assert isinstance(params, AgentRunParams)
        return await AgentLoop(session=session, params=params).run()
