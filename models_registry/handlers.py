"""Job handlers of the model types: ``model.inspect``, ``model.pull``, ``model.preload``
(``model.attach`` is in :mod:`models_registry.attach`). Registered with the job engine,
so ``POST /v1/jobs`` accepts them and ``/v1/capabilities`` lists them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from jobs.handlers import BaseHandler, JobContext, JobFailed, JobParams
from jobs.registry import register
from matrixcloud.errors import ApplicationError
from models_registry import engines
from models_registry.download import DownloadStopped, PullResult, SnapshotDownload
from models_registry.hf import HubClient, RepoMetadata
from models_registry.hub_guard import shown
from models_registry.inspection import fits_runtime, inspect_model, inspection_result
from models_registry.selectors import runtime_target
from models_registry.services import usage_note
from models_registry.sources import parse_model_id

MODEL_REQUIRED = "payload.model is required (e.g. hf:Qwen/Qwen2.5-7B-Instruct)"


class ModelParams(JobParams):
    model: str = ""
    revision: str = ""


class InspectParams(ModelParams):
    runtime_id: str = Field("", description="Say whether the model fits this runtime's GPU.")


def _ref(params: ModelParams) -> Any:
    if not params.model.strip():
        raise JobFailed(MODEL_REQUIRED)
    try:
        return parse_model_id(params.model, params.revision)
    except ApplicationError as exc:
        raise JobFailed(exc.message) from exc


def _client(ctx: JobContext, purpose: str) -> HubClient:
    return HubClient.for_workspace(ctx.job.workspace, purpose=purpose)


@register("model.inspect")
class InspectHandler(BaseHandler):
    """Metadata, parameters (safetensors headers first), size, memory per dtype, the
    recommended runtime and, given ``runtime_id``, whether it fits that runtime's GPU."""

    Params = InspectParams

    def run(self) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, InspectParams)
        ref = _ref(params)
        self.ctx.emit("resolve", "start", f"Resolving model {params.model}")
        try:
            inspection = inspect_model(_client(self.ctx, "model.inspect"), ref)
            target = (
                runtime_target(workspace=self.ctx.job.workspace, runtime_id=params.runtime_id)
                if params.runtime_id
                else None
            )
        except ApplicationError as exc:
            raise JobFailed(exc.message) from exc
        result = inspection_result(inspection)
        if target is not None:
            result["fits"] = fits_runtime(inspection, target)
        self.ctx.emit(
            "inspect",
            "ok",
            "Model metadata resolved",
            {"recommended_runtime": result.get("recommended_runtime", "")},
        )
        usage_note(workspace=self.ctx.job.workspace_id, kind="model.inspect", model=ref.model)
        return result


def run_download(
    ctx: JobContext,
    client: HubClient,
    meta: RepoMetadata,
    report: Callable[[int, int, str], None],
) -> PullResult:
    """Plan, check the disk, fetch (reporting bytes, never fewer than before), verify
    and link; an interrupt stops it and leaves the partial files for a resume."""
    download = SnapshotDownload(client, meta, stopped=lambda: ctx.interrupted)
    try:
        return _download(ctx, download, report)
    except DownloadStopped:
        ctx.check()
        raise
    except OSError as exc:  # the cache's disk, not the network (those are HubErrors)
        where = os.path.relpath(str(exc.filename), download.root) if exc.filename else ""
        raise JobFailed(
            f"writing the model cache failed: {exc.strerror or type(exc).__name__}"
            + (f" ({shown(where)})" if where else "")
        ) from exc


def _download(
    ctx: JobContext, download: SnapshotDownload, report: Callable[[int, int, str], None]
) -> PullResult:
    download.plan()
    download.check_disk()
    high = [download.progress.snapshot()[0]]

    def tick() -> None:
        done, total, file = download.progress.snapshot()
        if done > high[0]:
            ctx.progress()  # bytes arrived: a model job lives on while they do
        if done > high[0] or done == total:
            high[0] = max(high[0], done)
            report(high[0], total, file)

    if high[0] and high[0] < download.progress.total:
        ctx.emit(
            "download",
            "running",
            f"resuming: {high[0]} of {download.progress.total} bytes already on disk",
            {"resumed_bytes": high[0], "total_bytes": download.progress.total},
        )
    report(high[0], download.progress.total, "")
    download.wait(download.start(), tick)
    ctx.check()
    tick()
    return download.finish()


@register("model.pull")
class PullHandler(BaseHandler):
    """Download a Hugging Face snapshot into the cache (resumable, verified)."""

    Params = ModelParams
    resumable = True  # a run after a worker's death resumes the partial files
    timed_by_progress = True

    def run(self) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, ModelParams)
        ref = _ref(params)
        self.ctx.emit("cache", "start", "Preparing model cache")
        client = _client(self.ctx, "model.pull")
        try:
            meta = client.metadata(ref)
            self.ctx.emit("resolve", "ok", f"{ref.repo_id}@{ref.revision} is commit {meta.commit}")
            result = run_download(self.ctx, client, meta, self._report)
        except ApplicationError as exc:
            raise JobFailed(exc.message) from exc
        self.ctx.emit(
            "verify",
            "ok",
            f"checksums verified for {len(result.files)} files",
            {"files": len(result.files)},
        )
        self.ctx.emit("cache", "ok", "Model downloaded", {"dir": str(result.local_path)})
        usage_note(
            workspace=self.ctx.job.workspace_id,
            kind="model.pull",
            quantity=result.fetched_bytes,
            model=ref.model,
        )
        return {
            "model": ref.model,
            "revision": ref.revision,
            "commit": result.commit,
            "cache_dir": str(result.local_path.parent.parent),
            "local_path": str(result.local_path),
            "files": len(result.files),
            "total_bytes": result.total_bytes,
            "downloaded_bytes": result.fetched_bytes,
            "resumed_bytes": result.resumed_bytes,
            "staged": False,
        }

    def _report(self, done: int, total: int, file: str) -> None:
        percent = int(done * 100 / total) if total else 100
        self.ctx.emit(
            "download",
            "running",
            f"downloaded {done} of {total} bytes ({percent}%)",
            {"downloaded_bytes": done, "total_bytes": total, "file": file},
        )


class PreloadParams(JobParams):
    model: str = ""
    engine: str = Field("", description="ollama, vllm or sglang; empty: the first present.")
    endpoint_url: str = Field("", description="The engine's URL; default from settings.")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str) -> str:
        """Checked by the egress guard at creation (a 422 naming the refusal)."""
        try:
            return engines.user_url_check(value) if value else value
        except engines.EngineError as exc:
            raise PydanticCustomError("url_refused", exc.message) from None


@register("model.preload")
class PreloadHandler(BaseHandler):
    """Ask a running serving engine to load the model and say when it answers."""

    Params = PreloadParams
    resumable = True  # asking again is harmless

    def run(self) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, PreloadParams)
        if not params.model.strip():
            raise JobFailed(MODEL_REQUIRED)
        endpoint = self._endpoint(params)
        self.ctx.emit("engine", "ok", f"{endpoint.engine} answers at {endpoint.url}")
        try:
            detail = preload(endpoint, params.model)
        except engines.EngineError as exc:
            raise JobFailed(exc.message) from exc
        self.ctx.emit("ready", "ok", f"{params.model} loaded on {endpoint.engine}")
        return {
            "model": params.model,
            "engine": endpoint.engine,
            "endpoint_url": endpoint.url,
            "ready": True,
            **detail,
        }

    def _endpoint(self, params: PreloadParams) -> engines.EngineEndpoint:
        wanted = engines.engine_key(params.engine)
        if params.endpoint_url:
            return engines.EngineEndpoint(wanted or "openai", params.endpoint_url.rstrip("/"))
        candidates = [e for e in engines.configured_engines() if not wanted or e.engine == wanted]
        for candidate in candidates:
            self.ctx.check()
            if engines.engine_answers(candidate):
                return candidate
        tried = ", ".join(f"{e.engine} at {e.url}" for e in candidates) or "none configured"
        raise JobFailed(
            f"no serving engine is running to preload {params.model} (tried: {tried}); "
            "start Ollama, vLLM or SGLang, or set MATRIX_RUNTIME_OLLAMA_URL, "
            "MATRIX_RUNTIME_VLLM_URL or MATRIX_RUNTIME_SGLANG_URL"
        )


def preload(endpoint: engines.EngineEndpoint, model: str) -> dict[str, Any]:
    """Load ``model`` on ``endpoint``; what the engine said."""
    if endpoint.engine == "ollama":
        answer = engines.ollama_load(endpoint.url, model)
        return {"load_duration_ns": answer.get("load_duration")}
    served = engines.openai_models(endpoint.url)
    match = next((m for m in served if engines.model_matches(m, model)), None)
    if match is None:
        raise engines.EngineError(
            f"{endpoint.url} does not serve {model} (it serves: {', '.join(served) or 'nothing'}); "
            "vLLM and SGLang load their model at start"
        )
    engines.openai_warm(endpoint.url, match)
    return {"served_model": match}
