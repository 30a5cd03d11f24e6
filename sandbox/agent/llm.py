"""A small client for OpenAI-compatible ``POST {base_url}/chat/completions``.

Non-streaming requests with ``tools`` (function tools); one answer is a
:class:`ModelTurn`: the assistant message to append, its tool calls and the token
usage the server reported. The request goes through the egress guard
(:mod:`matrixcloud.lib.egress`) in a worker thread, bounded by the time the run has
left; any failure is an :class:`LlmError` whose message says what went wrong: the
refusal, or the status and the server's own (short, sanitised) error message.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from matrixcloud.lib import egress
from runtimes.detection import configured_engine_urls

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class LlmError(Exception):
    """The endpoint could not be reached or gave an answer this client cannot use."""


@dataclass(frozen=True)
class ChatEndpoint:
    """Where to send chat completions, with which model, and the key (if any)."""

    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    source: str = ""

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def host(self) -> str:
        """The endpoint as shown in events: scheme, host and path, never a key."""
        parts = urlsplit(self.base_url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for (``arguments`` as the model wrote them)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ModelTurn:
    """One answer of the model: its message, tool calls and token usage."""

    content: str
    tool_calls: list[ToolCall]
    prompt_tokens: int
    completion_tokens: int
    reported: bool  # False: the server sent no usage (the counts are estimates)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


async def chat_complete(
    endpoint: ChatEndpoint,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    timeout: float,
) -> ModelTurn:
    """Ask the model for its next turn (at most ``timeout`` seconds)."""
    body: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    if tools:
        body["tools"] = tools
        body["tool_choice"] = "auto"
    raw = await asyncio.to_thread(_post, endpoint, body, timeout)
    return turn_parse(raw, sent=body)


def _post(endpoint: ChatEndpoint, body: dict[str, Any], timeout: float) -> bytes:
    """POST through the egress guard (matrixcloud/lib/egress): the checked address only,
    no redirect elsewhere, a bounded answer; a remote body never reaches the error."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        answer = egress.request(
            "POST",
            endpoint.url,
            json_body=body,
            headers=headers,
            timeout=max(timeout, 0.1),
            max_bytes=MAX_RESPONSE_BYTES,
            configured=configured_engine_urls(),
        )
    except egress.EgressError as exc:
        raise LlmError(f"the model endpoint {endpoint.host}: {exc.message}") from None
    if not answer.ok:
        reason = egress.error_reason(answer) or "(no error message)"
        raise LlmError(f"the model endpoint answered {answer.status}: {reason}")
    return answer.body


def turn_parse(raw: bytes, *, sent: dict[str, Any]) -> ModelTurn:
    """The turn in a chat-completions answer; :class:`LlmError` if it has none."""
    try:
        answer = json.loads(raw)
        message = answer["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        # Never the body itself: it may be anything the URL's server says (#17).
        raise LlmError(
            f"the model endpoint sent no chat completion ({len(raw)} bytes that are not one)"
        ) from None
    if not isinstance(message, dict):
        raise LlmError("the model endpoint sent a chat completion without a message")
    content = message.get("content") if isinstance(message.get("content"), str) else ""
    calls = [_tool_call(raw_call, n) for n, raw_call in enumerate(message.get("tool_calls") or [])]
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    reported = prompt is not None and completion is not None
    if not reported:  # about four characters a token, so limits still hold
        prompt = len(json.dumps(sent["messages"])) // 4
        completion = len(json.dumps(message)) // 4
    return ModelTurn(content or "", calls, prompt or 0, completion or 0, reported)


def _tool_call(raw: Any, index: int) -> ToolCall:
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise LlmError("the model asked for a tool call without a function name")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {})
    call_id = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else f"call_{index}"
    return ToolCall(id=call_id, name=function["name"], arguments=arguments)


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
