"""Talking to serving engines: OpenAI-compatible servers (vLLM, SGLang, any
``/v1/models`` endpoint) and Ollama. Used by ``external_endpoint`` installs (probe) and
``model.preload`` (load and warm a model).

Engines live on loopback or the local network, so calls never go through a proxy.
Each call is bounded by a timeout; failures are :class:`EngineError` with a message
that names the URL and what went wrong.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from matrixcloud.errors import UpstreamError
from matrixcloud.lib.env import env_str
from runtimes.detection import ENGINES

PROBE_TIMEOUT_SECONDS = 5.0
LOAD_TIMEOUT_SECONDS = 120.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
OPENAI_COMPATIBLE = ("vllm", "sglang")


class EngineError(UpstreamError):
    """A serving engine is absent, refused, or answered something unexpected."""


@dataclass(frozen=True)
class EngineEndpoint:
    """One engine at one URL."""

    engine: str  # ollama | vllm | sglang | openai
    url: str


def engine_key(name: str) -> str:
    """``vLLM`` → ``vllm``; unknown names are kept, lower-cased."""
    return name.strip().lower().replace(" ", "").replace("-", "")


def _request(
    url: str, body: dict[str, Any] | None = None, *, timeout: float, api_key: str = ""
) -> Any:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EngineError(f"{url!r} is not an http(s) URL")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise EngineError(f"{url} answered HTTP {exc.code}: {detail}".strip()) from exc
    except (OSError, ValueError) as exc:
        raise EngineError(f"{url} did not answer: {exc}") from exc
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise EngineError(f"{url} did not answer JSON") from exc


def openai_base(url: str) -> str:
    """The ``.../v1`` base of an OpenAI-compatible server, given it with or without it."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def openai_models(
    url: str, *, api_key: str = "", timeout: float = PROBE_TIMEOUT_SECONDS
) -> list[str]:
    """The model ids an OpenAI-compatible server lists at ``/v1/models``."""
    body = _request(openai_base(url) + "/models", timeout=timeout, api_key=api_key)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise EngineError(f"{openai_base(url)}/models is not an OpenAI-compatible model list")
    return [str(item.get("id")) for item in data if isinstance(item, dict) and item.get("id")]


def model_matches(served: str, wanted: str) -> bool:
    """Whether a served id names ``wanted`` (``hf:`` and case ignored; a bare name of a
    ``ns/name`` id counts)."""
    a = served.lower().removeprefix("hf:")
    b = wanted.lower().removeprefix("hf:")
    return a == b or a.split("/")[-1] == b.split("/")[-1]


def openai_warm(
    url: str, model: str, *, api_key: str = "", timeout: float = LOAD_TIMEOUT_SECONDS
) -> str:
    """Ask for one token, so the model is loaded and answering; the reply text."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "temperature": 0,
    }
    answer = _request(
        openai_base(url) + "/chat/completions", body, timeout=timeout, api_key=api_key
    )
    try:
        return str(answer["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError) as exc:
        raise EngineError(f"{url} answered a chat completion without choices") from exc


def ollama_models(url: str, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> list[str]:
    body = _request(url.rstrip("/") + "/api/tags", timeout=timeout)
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise EngineError(f"{url}/api/tags is not an Ollama model list")
    return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]


def ollama_load(url: str, model: str, *, timeout: float = LOAD_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Ollama loads a model on a generate request with no prompt."""
    body = {"model": model, "prompt": "", "stream": False, "keep_alive": "30m"}
    answer = _request(url.rstrip("/") + "/api/generate", body, timeout=timeout)
    if not isinstance(answer, dict) or not answer.get("done"):
        raise EngineError(f"{url} did not load {model}: {str(answer)[:200]}")
    return answer


def configured_engines() -> list[EngineEndpoint]:
    """The engines this installation is told about (``MATRIX_RUNTIME_*_URL``)."""
    found = []
    for engine in ENGINES:
        url = env_str(engine.url_variable, engine.default_url)
        if url:
            found.append(EngineEndpoint(engine.name, url.rstrip("/")))
    return found


def engine_answers(endpoint: EngineEndpoint) -> bool:
    try:
        if endpoint.engine == "ollama":
            ollama_models(endpoint.url, timeout=1.0)
        else:
            openai_models(endpoint.url, timeout=1.0)
    except EngineError:
        return False
    return True
