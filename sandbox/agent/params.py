"""The ``agent.run`` payload: an MCP server (as for ``tool.run``: command policy, env
rules, network) plus the prompt, the endpoint, the model and the limits, all checked at
creation (a 422 naming the field; ``base_url`` by the egress guard too). Read by the
handler (sandbox/agent/handlers.py) and the loop the host runs (sandbox/agent/loop.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from sandbox.agent.endpoint import url_check
from sandbox.handlers import McpServerParams

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
