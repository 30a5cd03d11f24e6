"""The ``agent.run`` loop: the model and a ready MCP session, turn by turn, bounded.

Runs in the sandbox host on the session that started the run's MCP server (the same
isolation, the same recorded tool calls as any session). Each model turn and each
tool call is an event as it happens; each turn's tokens are metered (``llm.tokens``)
as they are spent, so a run stopped by a limit is still counted. Limits: model turns
(``max_steps``), tokens in all (``max_tokens``) and wall time (``max_seconds``); each
stops the run with an error that names the limit.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from accounts.principals import Actor
from accounts.services.usage import Usage, usage_record_many
from matrixcloud.errors import ApplicationError
from sandbox.agent.endpoint import EndpointUnavailable, endpoint_resolve
from sandbox.agent.llm import ChatEndpoint, LlmError, ModelTurn, ToolCall, chat_complete
from sandbox.host import records
from sandbox.host.session import SessionFailed
from sandbox.mcp import McpTool

if TYPE_CHECKING:
    from sandbox.agent.params import AgentRunParams
    from sandbox.host.session import LiveSession

STEP = "agent_run"  # the original's agent.run step (docs/COMPATIBILITY.md#c-09)
TOOL_RESULT_CHARS = 16_000
EVENT_TEXT_CHARS = 2_000
HTTP_MARGIN = 1.0
TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Tally:
    """What the run has used so far."""

    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def function_tools(
    tools: list[McpTool], wanted: list[str] | None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The MCP tools as OpenAI function tools, and function name → MCP tool name.

    Function names allow only ``[A-Za-z0-9_-]{1,64}``, so other characters become
    ``_`` (and a clash gets a number).
    """
    offered: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for tool in tools:
        if wanted is not None and tool.name not in wanted:
            continue
        name = base = TOOL_NAME.sub("_", tool.name)[:60] or "tool"
        for n in range(2, 1000):
            if name not in names:
                break
            name = f"{base}_{n}"
        names[name] = tool.name
        schema = tool.raw.get("inputSchema")
        offered.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": tool.description[:1024],
                    "parameters": schema if isinstance(schema, dict) else {"type": "object"},
                },
            }
        )
    return offered, names


def tool_result_text(reply: dict[str, Any]) -> str:
    """What the model is told a call gave: the text blocks (others as JSON), capped."""
    if not reply.get("ok"):
        return f"tool call failed: {reply.get('error', 'unknown error')}"
    result = reply.get("result") or {}
    parts = []
    for block in result.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            parts.append(json.dumps(block)[:TOOL_RESULT_CHARS])
    if not parts and "structuredContent" in result:
        parts.append(json.dumps(result["structuredContent"]))
    text = "\n".join(parts)
    if result.get("isError"):
        text = f"tool error: {text}"
    return text[:TOOL_RESULT_CHARS]


@dataclass
class AgentLoop:
    """One run: the conversation, the tools, the tally, and the session to call them on."""

    session: LiveSession
    params: AgentRunParams
    endpoint: ChatEndpoint | None = None
    tally: Tally = field(default_factory=Tally)
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return str(self.session.job_id)

    async def run(self) -> dict[str, Any]:
        """The run to its answer, or a :class:`SessionFailed` naming what stopped it."""
        started = time.monotonic()
        self.endpoint = await self._endpoint()
        client = self.session.client
        listed = list(client.tools or []) if client is not None else []
        tools, names = function_tools(listed, self.params.tools)
        self.messages = self._opening()
        await self._emit(
            STEP,
            "start",
            f"Agent started: model {self.endpoint.model} with {len(tools)} tools, "
            f"at most {self.params.max_steps} steps",
            {"model": self.endpoint.model, "endpoint": self.endpoint.host, "tools": list(names)},
        )
        limit = asyncio.timeout(self.params.max_seconds)
        try:
            async with limit:
                output = await self._turns(tools, names, started)
        except TimeoutError:
            if not limit.expired():
                raise
            raise SessionFailed(
                STEP,
                f"agent.run stopped: time limit reached (max_seconds={self.params.max_seconds:g}) "
                f"after {self.tally.steps} steps",
            ) from None
        usage = self.tally.usage()
        await self._emit(
            STEP,
            "ok",
            f"Agent finished in {self.tally.steps} steps ({self.tally.total_tokens} tokens)",
            usage,
        )
        return {"output": output, "steps": self.tally.steps, "usage": usage}

    async def _endpoint(self) -> ChatEndpoint:
        job = self.session.job
        params = self.params
        try:
            return await records.run(
                lambda: endpoint_resolve(
                    actor=Actor.job_creator(job.workspace_id, job.created_by_id),
                    model=params.model,
                    base_url=params.base_url,
                    installation_id=params.installation_id,
                    provider=params.provider,
                    credential=params.credential,
                )
            )
        except EndpointUnavailable as exc:
            raise SessionFailed(STEP, f"agent.run has no model endpoint: {exc}") from None
        except ApplicationError as exc:  # a stored key this installation cannot decrypt
            raise SessionFailed(STEP, f"agent.run: {exc.message}") from None

    def _opening(self) -> list[dict[str, Any]]:
        messages = [{"role": "system", "content": self.params.system}] if self.params.system else []
        return [*messages, {"role": "user", "content": self.params.prompt}]

    async def _turns(
        self, tools: list[dict[str, Any]], names: dict[str, str], started: float
    ) -> str:
        while True:
            turn = await self._ask(tools, started)
            if not turn.tool_calls:
                await self._emit(
                    "agent_step",
                    "ok",
                    f"Step {self.tally.steps}: the model answered",
                    self._turn_data(turn),
                )
                return turn.content
            await self._emit(
                "agent_step",
                "running",
                f"Step {self.tally.steps}: the model asked for {len(turn.tool_calls)} tool call"
                + ("s" if len(turn.tool_calls) != 1 else ""),
                self._turn_data(turn),
            )
            self._check_limits()
            self.messages.append(turn.message())
            for call in turn.tool_calls:
                self.messages.append(await self._call(call, names))

    async def _ask(self, tools: list[dict[str, Any]], started: float) -> ModelTurn:
        assert self.endpoint is not None
        # The run's own time limit (asyncio.timeout in run()) must fire first and say so.
        left = self.params.max_seconds - (time.monotonic() - started) + HTTP_MARGIN
        try:
            turn = await chat_complete(self.endpoint, self.messages, tools, timeout=left)
        except LlmError as exc:
            raise SessionFailed(STEP, f"agent.run: {exc}") from None
        self.tally.steps += 1
        self.tally.prompt_tokens += turn.prompt_tokens
        self.tally.completion_tokens += turn.completion_tokens
        await self._meter(turn)
        return turn

    def _check_limits(self) -> None:
        """After a turn that asked for tools: may the run go on to another turn?"""
        if self.tally.steps >= self.params.max_steps:
            raise SessionFailed(
                STEP,
                f"agent.run stopped: step limit reached (max_steps={self.params.max_steps}): "
                f"the model was still calling tools after {self.tally.steps} steps",
            )
        if self.tally.total_tokens >= self.params.max_tokens:
            raise SessionFailed(
                STEP,
                f"agent.run stopped: token limit reached (max_tokens={self.params.max_tokens}): "
                f"{self.tally.total_tokens} tokens used in {self.tally.steps} steps",
            )

    async def _call(self, call: ToolCall, names: dict[str, str]) -> dict[str, Any]:
        """Call one tool the model asked for; the ``tool`` message with what it gave."""
        name = names.get(call.name, call.name)
        step = self.tally.steps
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError as exc:
            arguments, problem = None, f"the arguments are not valid JSON: {exc}"
        else:
            problem = "" if isinstance(arguments, dict) else "the arguments must be a JSON object"
        if not problem and call.name not in names:
            problem = f"there is no tool named {call.name!r}"
        shown = arguments if isinstance(arguments, dict) else call.arguments[:EVENT_TEXT_CHARS]
        await self._emit(
            "tool_call", "start", f"Calling tool {name}", {"step": step, "arguments": shown}
        )
        if problem:
            await self._emit("tool_call", "error", f"Tool {name} not called: {problem}", None)
            return {"role": "tool", "tool_call_id": call.id, "content": f"error: {problem}"}
        reply = await self.session.call(name, arguments, caller=self._caller())
        await self._emit(*self._call_event(name, reply))
        return {"role": "tool", "tool_call_id": call.id, "content": tool_result_text(reply)}

    @staticmethod
    def _call_event(name: str, reply: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
        if not reply.get("ok"):
            return ("tool_call", "error", f"Tool {name} failed: {reply.get('error')}", {})
        data = {"duration_ms": reply.get("duration_ms"), "is_error": reply["outcome"] != "ok"}
        return ("tool_call", "ok", f"Tool {name} answered", data)

    def _caller(self) -> dict[str, Any]:
        creator = self.session.job.created_by_id
        return {"actor": creator or "operator", "user_id": creator, "ip": ""}

    def _turn_data(self, turn: ModelTurn) -> dict[str, Any]:
        data: dict[str, Any] = {
            "step": self.tally.steps,
            "usage": {
                "prompt_tokens": turn.prompt_tokens,
                "completion_tokens": turn.completion_tokens,
                "total_tokens": turn.total_tokens,
                "reported": turn.reported,
            },
        }
        if turn.content:
            data["content"] = turn.content[:EVENT_TEXT_CHARS]
        if turn.tool_calls:
            data["tool_calls"] = [
                {"name": call.name, "arguments": call.arguments[:EVENT_TEXT_CHARS]}
                for call in turn.tool_calls
            ]
        return data

    async def _meter(self, turn: ModelTurn) -> None:
        """Record the tokens the server reported for this turn (estimates are not billed)."""
        if not turn.reported or turn.total_tokens < 1:
            return
        job = self.session.job
        assert self.endpoint is not None
        usage = Usage(
            workspace_id=job.workspace_id,
            kind="llm.tokens",
            quantity=turn.total_tokens,
            user_id=job.created_by_id,
            meta={
                "job_id": self.job_id,
                "model": self.endpoint.model,
                "step": self.tally.steps,
                "prompt_tokens": turn.prompt_tokens,
                "completion_tokens": turn.completion_tokens,
            },
        )
        await records.run(usage_record_many, [usage])

    async def _emit(self, step: str, status: str, message: str, data: Any) -> None:
        await records.run(records.events_emit, self.job_id, [(step, status, message, data)])
