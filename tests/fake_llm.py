"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for agent.run tests.

A real HTTP server (tests/loopback.py) answering
``POST /v1/chat/completions`` from a script: each request takes the next
:class:`Reply` (tool calls, or a final text), or, with ``loop=True``, always asks for
the same tool call (a model that never stops). Every request is kept (its JSON body
and headers) so tests can check what the model was shown: the tools, the tool results,
the key. Usage is reported as the script says. ``GET /v1/models`` lists the model.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.loopback import LoopbackServer

MODEL = "fake-agent-model"


@dataclass(frozen=True)
class Reply:
    """One scripted model turn: tool calls (name, arguments) or a final ``content``."""

    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    content: str = ""
    prompt_tokens: int = 20
    completion_tokens: int = 5


@dataclass
class Script:
    """What the server answers, and what it was asked."""

    replies: list[Reply]
    loop: Reply | None = None
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, request: dict[str, Any]) -> Reply | None:
        with self.lock:
            self.requests.append(request)
            if self.loop is not None:
                return self.loop
            return self.replies.pop(0) if self.replies else None


def completion(reply: Reply, number: int) -> dict[str, Any]:
    """The chat-completions body of one reply."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{number}_{index}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for index, (name, arguments) in enumerate(reply.tool_calls)
        ]
    return {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def handler_for(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            # The client may have given up (a run stopped by its time limit).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                self._send(400, {"error": {"message": "invalid JSON"}})
                return
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            request = {"body": body, "headers": dict(self.headers.items())}
            reply = script.next_reply(request)
            if script.delay:
                time.sleep(script.delay)
            if reply is None:
                self._send(500, {"error": {"message": "the script has no more replies"}})
                return
            self._send(200, completion(reply, len(script.requests)))

    return Handler


@dataclass
class FakeLlm:
    """A running server: its base URL (``…/v1``) and its script."""

    base_url: str
    script: Script

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.script.requests


class _Server(LoopbackServer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def start(self) -> _Server:
        self._serve(handler_for(self.script))
        return self


@contextmanager
def fake_llm(
    replies: list[Reply] | None = None, *, loop: Reply | None = None, delay: float = 0.0
) -> Iterator[FakeLlm]:
    """Serve ``replies`` (or ``loop`` forever) on a free loopback port while in use."""
    script = Script(replies=list(replies or []), loop=loop, delay=delay)
    with _Server(script) as server:
        yield FakeLlm(f"{server.url}/v1", script)
