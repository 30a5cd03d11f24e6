"""Serving engines on 127.0.0.1 for tests: real HTTP servers in a thread.

``FakeOpenAI`` speaks the OpenAI-compatible API that vLLM and SGLang serve
(``GET /v1/models``, ``POST /v1/chat/completions``; an optional API key is checked);
``FakeOllama`` speaks Ollama's (``GET /api/version``, ``GET /api/tags``,
``POST /api/generate``, which loads a model it has). Requests are logged as
``(method, path, body)``.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.loopback import LoopbackServer


class _Server(LoopbackServer):
    """A ThreadingHTTPServer in a daemon thread; subclasses define ``handle``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def handle(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        raise NotImplementedError

    def start(self) -> _Server:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                owner.requests.append((self.command, self.path, body))
                status, answer = owner.handle(
                    self.command, self.path, body, dict(self.headers.items())
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve

        self._serve(Handler)
        return self


class FakeOpenAI(_Server):
    """An OpenAI-compatible server (as vLLM or SGLang) serving ``models``."""

    def __init__(self, models: list[str], api_key: str = "") -> None:
        super().__init__()
        self.models = models
        self.api_key = api_key

    def handle(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        if self.api_key and headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "invalid api key", "type": "auth"}}
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "vllm"} for m in self.models
            ]
            return 200, {"object": "list", "data": data}
        if method == "POST" and path == "/v1/chat/completions":
            model = (body or {}).get("model")
            if model not in self.models:
                return 404, {"error": {"message": f"The model `{model}` does not exist."}}
            return 200, {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "pong"},
                        "finish_reason": "length",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        return 404, {"error": {"message": f"no route {method} {path}"}}


class FakeOllama(_Server):
    """An Ollama server that has ``models`` pulled; generate loads one."""

    def __init__(self, models: list[str]) -> None:
        super().__init__()
        self.models = models
        self.loaded: list[str] = []

    def handle(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and path == "/api/version":
            return 200, {"version": "0.6.0"}
        if method == "GET" and path == "/api/tags":
            return 200, {"models": [{"name": m, "model": m, "size": 1} for m in self.models]}
        if method == "POST" and path == "/api/generate":
            model = (body or {}).get("model")
            if model not in self.models:
                return 404, {"error": f"model '{model}' not found, try pulling it first"}
            self.loaded.append(model)
            return 200, {"model": model, "response": "", "done": True, "load_duration": 12345}
        return 404, {"error": "not found"}
