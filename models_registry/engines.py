"""Talking to serving engines: OpenAI-compatible servers (vLLM, SGLang, any
``/v1/models`` endpoint) and Ollama. Used by ``external_endpoint`` installs (probe) and
``model.preload`` (load and warm a model).

Every call goes through the egress guard (:mod:`matrixcloud.lib.egress`): a URL a user
named is judged as theirs (in production, loopback and private addresses only when the
operator configured or allowed them), the operator's engine URLs as the operator's;
no proxy, the checked address only, a bounded answer. Failures are
:class:`EngineError` with a message that names the URL and what went wrong, never the
engine's body beyond a short error message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from matrixcloud.errors import UpstreamError
from matrixcloud.lib import egress
from runtimes.detection import configured_engine_urls, engine_urls

PROBE_TIMEOUT_SECONDS = 5.0
LOAD_TIMEOUT_SECONDS = 120.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024
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
    url: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float,
    api_key: str = "",
) -> Any:
    """GET (or POST ``body``) ``url`` through the egress guard; the JSON answer."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        answer = egress.request(
            "POST" if body is not None else "GET",
            url,
            json_body=body,
            headers=headers,
            timeout=timeout,
            max_bytes=MAX_ANSWER_BYTES,
            configured=configured_engine_urls(),
        )
    except egress.EgressError as exc:
        raise EngineError(f"{_shown(url)}: {exc.message}") from exc
    if not answer.ok:
        reason = egress.error_reason(answer)
        said = f": {reason}" if reason else ""
        raise EngineError(f"{_shown(url)} answered HTTP {answer.status}{said}")
    try:
        return answer.json()
    except ValueError as exc:
        raise EngineError(f"{_shown(url)} did not answer JSON") from exc


def _shown(url: str) -> str:
    """``url`` as errors show it: scheme, host, port and path (no query, no userinfo)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the engine URL"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def user_url_check(url: str) -> str:
    """An engine URL a user named, checked where its job is created (no DNS): the shape,
    and for an address or ``localhost`` the egress guard's rules; EngineError (422)
    naming the refusal. The fetch checks again, whatever the name resolves to then."""
    try:
        return egress.url_check(url, configured=configured_engine_urls())
    except egress.EgressError as exc:
        raise EngineError(exc.message, http_status=422) from None


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
        said = answer.get("error") if isinstance(answer, dict) else None
        reason = egress.sanitise(said) if isinstance(said, str) else "it did not say done"
        raise EngineError(f"{_shown(url)} did not load {model}: {reason}")
    return answer


def configured_engines() -> list[EngineEndpoint]:
    """The engines this installation is told about (``MATRIX_RUNTIME_*_URL``)."""
    return [EngineEndpoint(engine.name, url) for engine, url in engine_urls().items()]


def engine_answers(endpoint: EngineEndpoint) -> bool:
    try:
        if endpoint.engine == "ollama":
            ollama_models(endpoint.url, timeout=1.0)
        else:
            openai_models(endpoint.url, timeout=1.0)
    except EngineError:
        return False
    return True
