"""Which runtimes this machine has: node, python and the model-serving engines.

A serving engine counts as present when its executable is on ``PATH``, its Python
module is importable (looked up with ``find_spec``, never imported: importing vLLM
takes seconds) or its HTTP endpoint answers. The endpoints come from
``MATRIX_RUNTIME_OLLAMA_URL`` (default ``http://127.0.0.1:11434``),
``MATRIX_RUNTIME_VLLM_URL`` and ``MATRIX_RUNTIME_SGLANG_URL`` (unset: not probed).
Results are cached for :data:`CACHE_SECONDS` so ``/v1/capabilities`` stays fast.
Probes go through the egress guard (:mod:`matrixcloud.lib.egress`) as the operator's
URLs.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from matrixcloud.lib import egress
from matrixcloud.lib.env import env_str

logger = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 0.3
PROBE_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Engine:
    """How to recognise one serving engine."""

    name: str
    executable: str
    module: str | None
    url_variable: str
    default_url: str
    probe_path: str


# The `ollama` PyPI package is only a client, so a module does not prove the engine.
ENGINES: tuple[Engine, ...] = (
    Engine("ollama", "ollama", None, "MATRIX_RUNTIME_OLLAMA_URL", "http://127.0.0.1:11434",
           "/api/version"),
    Engine("vllm", "vllm", "vllm", "MATRIX_RUNTIME_VLLM_URL", "", "/v1/models"),
    Engine("sglang", "sglang", "sglang", "MATRIX_RUNTIME_SGLANG_URL", "", "/v1/models"),
)  # fmt: skip

_lock = threading.Lock()
_cache: tuple[float, dict[str, bool]] | None = None


def engine_url(engine: Engine) -> str:
    """The URL the operator configured for ``engine`` ("" when unset: not probed)."""
    return env_str(engine.url_variable, engine.default_url).rstrip("/")


def engine_urls() -> dict[Engine, str]:
    """The engines the operator gave a URL (``MATRIX_RUNTIME_*_URL``, or Ollama's
    default), each with it: the one reading of those variables."""
    return {engine: url for engine in ENGINES if (url := engine_url(engine))}


def configured_engine_urls() -> tuple[str, ...]:
    """Every engine URL the operator configured: the egress guard treats a URL of the
    same origin as the operator's (reachable on loopback or the LAN in production)."""
    return tuple(engine_urls().values())


def endpoint_answers(base_url: str, path: str, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """True when an HTTP server at ``base_url`` answers ``path`` (2xx, or 401/403).

    Through the egress guard like every fetch (no proxy, the checked address only), as
    the operator's URL: an engine URL naming this server's API, bus or database, or a
    metadata address, is never probed."""
    try:
        answer = egress.request(
            "GET",
            base_url.rstrip("/") + path,
            timeout=timeout,
            max_bytes=PROBE_MAX_BYTES,
            configured=(base_url,),
        )
    except egress.EgressError as exc:
        if exc.refused:
            logger.warning("ignoring engine URL %r: %s", base_url, exc.message)
        return False
    # An engine started with an API key refuses anonymous calls but is there.
    return answer.ok or answer.status in (401, 403)


def module_available(name: str) -> bool:
    """True when ``name`` is importable, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def engine_present(engine: Engine) -> bool:
    """An engine is present by executable, module or a reachable endpoint."""
    if shutil.which(engine.executable):
        return True
    if engine.module and module_available(engine.module):
        return True
    url = engine_url(engine)
    return bool(url) and endpoint_answers(url, engine.probe_path)


def _detect() -> dict[str, bool]:
    with ThreadPoolExecutor(max_workers=len(ENGINES)) as pool:
        engines = dict(zip(ENGINES, pool.map(engine_present, ENGINES), strict=True))
    return {
        "node": shutil.which("node") is not None,
        # This server runs on Python, so a Python runtime is always present.
        "python": True,
        **{engine.name: present for engine, present in engines.items()},
    }


def detect_runtimes() -> dict[str, bool]:
    """``{node, python, ollama, vllm, sglang}`` → present, cached for a short while."""
    global _cache
    with _lock:
        if _cache is not None and time.monotonic() - _cache[0] < CACHE_SECONDS:
            return dict(_cache[1])
        result = _detect()
        _cache = (time.monotonic(), result)
        return dict(result)


def clear_cache() -> None:
    """Forget cached results (tests, or after installing an engine)."""
    global _cache
    with _lock:
        _cache = None
