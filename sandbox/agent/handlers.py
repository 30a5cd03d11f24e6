"""The ``agent.run`` job type: the handler a sandbox host drives.

Its payload (sandbox/agent/params.py) is checked at creation; so is the provider
credential it would send the prompt with (a Member's, like a ``${secret:...}``), here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from accounts.principals import Actor
from accounts.services.providers import provider_use_check
from jobs.handlers import JobParams
from jobs.registry import register
from sandbox.agent.params import AgentRunParams
from sandbox.handlers import McpServerParams, SessionHandler

if TYPE_CHECKING:
    from sandbox.host.session import LiveSession


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
