"""``model.attach``: install a profile on a runtime, doing every step it reports.

Steps (events): ``checking_runtime``, ``checking_disk``, ``checking_gpu`` (advisory
without GPU tooling), ``fetching_metadata``, then by install mode ``downloading``
(``pull_from_source``: the real, resumable, verified download, progress in bytes),
``checking_mount`` (``mount_volume``: the path holds a model) or ``probing_endpoint``
(``external_endpoint``: an OpenAI-compatible ``/v1/models`` lists it), ``verifying``,
``creating_profile`` (a serving profile for vLLM, Ollama or SGLang), ``attached``,
``ready``. Any failure, cancel or expiry marks the installation and its profile
``failed`` with the reason before the job ends.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs.choices import JobStatus
from jobs.handlers import BaseHandler, JobFailed, JobInterrupted, JobParams
from jobs.registry import register
from matrixcloud.errors import ApplicationError
from matrixcloud.lib.paths import PathRefused, inside_roots
from models_registry import engines
from models_registry.choices import InstallationStatus, InstallMode, ProfileStatus
from models_registry.handlers import run_download
from models_registry.hf import HubClient
from models_registry.inspection import Inspection, fits_runtime, inspect_model
from models_registry.models import ModelInstallation, ModelProfile
from models_registry.selectors import RuntimeTarget, runtime_target
from models_registry.services import installation_fail, usage_note
from models_registry.sources import human_parameters, parse_model_id, safe_name

MODEL_FILE_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx")
ENGINE_NAMES = {"vllm": "vLLM", "ollama": "Ollama", "sglang": "SGLang"}


class AttachParams(JobParams):
    installation_id: str = ""
    profile_id: str = ""
    model: str = ""
    provider: str = ""
    runtime_id: str = ""
    install_mode: str = InstallMode.PULL_FROM_SOURCE
    serving_engine: str = ""


@register("model.attach")
class AttachHandler(BaseHandler):
    """Install a model profile on a runtime (see the module docstring)."""

    Params = AttachParams
    resumable = True  # its steps may run again; a download resumes its partial files
    timed_by_progress = True

    def run(self) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, AttachParams)
        self.installation = self._installation(params)
        try:
            return self._steps(params)
        except JobInterrupted as exc:
            self._fail(f"the model.attach job was {exc.status}")
            raise
        except JobFailed as exc:
            self._fail(str(exc))
            raise
        except ApplicationError as exc:
            self._fail(exc.message)
            raise JobFailed(exc.message) from exc
        except Exception as exc:
            self._fail(f"internal error: {type(exc).__name__}: {exc}")
            raise

    @classmethod
    def ended(cls, job_id: str, status: str, error: str) -> None:
        """An attach that ended without finishing its installation (cancelled or expired
        while queued, or its worker died) fails it, and its profile, with the job's end as
        the reason. One the handler already settled is left as it is."""
        if status == JobStatus.COMPLETE:
            return
        reason = error or f"the model.attach job ended {status}"
        unsettled = ModelInstallation.objects.filter(
            job_id=job_id, status__in=InstallationStatus.active()
        )
        for installation_id in unsettled.values_list("pk", flat=True):
            installation_fail(installation_id=installation_id, reason=reason)

    def _installation(self, params: AttachParams) -> ModelInstallation | None:
        if not params.runtime_id:
            raise JobFailed("runtime_id is required")
        if not params.installation_id:
            return None
        found = ModelInstallation.objects.filter(
            pk=params.installation_id, workspace_id=self.ctx.job.workspace_id
        ).first()
        if found is None:  # never another workspace's row
            raise JobFailed(f"installation {params.installation_id} not found")
        return found

    def client(self) -> HubClient:
        """One client (one audited read of the workspace's credential) per job."""
        if getattr(self, "_client", None) is None:
            self._client = HubClient.for_workspace(self.ctx.job.workspace, purpose="model.attach")
        return self._client

    def _fail(self, reason: str) -> None:
        if self.installation is not None:
            installation_fail(installation_id=self.installation.id, reason=reason)

    def _advance(self, status: str, progress: int | None = None, **fields: Any) -> None:
        if self.installation is not None:
            self.installation.advance(status, progress, **fields)

    # --- the steps ------------------------------------------------------------------------
    def _steps(self, params: AttachParams) -> dict[str, Any]:
        mode = params.install_mode or InstallMode.PULL_FROM_SOURCE
        if mode not in InstallMode.values:
            raise JobFailed(f"unknown install mode {mode!r}")
        target = self._check_runtime(params)
        inspection = self._metadata(params, mode)
        self._check_disk(target, inspection, mode)
        self._check_gpu(target, inspection)
        self._emit_metadata(params, inspection)
        if mode == InstallMode.PULL_FROM_SOURCE:
            local_path, endpoint_url = self._download(params, inspection), ""
        elif mode == InstallMode.MOUNT_VOLUME:
            local_path, endpoint_url = self._check_mount(params), ""
        else:
            local_path, endpoint_url = "", self._probe_endpoint(params)
        self._verify(mode, local_path, endpoint_url)
        serving = self._serving_profile(params, mode, local_path, endpoint_url)
        self._advance(InstallationStatus.ATTACHED, 100, local_path=local_path or str(serving))
        self.ctx.emit("attached", "ok", f"attached to {params.runtime_id}")
        self._advance(InstallationStatus.READY, 100)
        if params.profile_id:
            ModelProfile.objects.filter(
                pk=params.profile_id, workspace_id=self.ctx.job.workspace_id
            ).update(status=ProfileStatus.READY, error="", updated_at=timezone.now())
        self.ctx.emit("ready", "ok", f"model ready on {params.runtime_id}", {"progress": 100})
        usage_note(workspace=self.ctx.job.workspace_id, kind="model.attach", model=params.model)
        return {
            "installation_id": params.installation_id,
            "profile_id": params.profile_id,
            "runtime": params.runtime_id,
            "install_mode": mode,
            "serving_engine": params.serving_engine,
            "status": "ready",
            "local_path": local_path,
            "endpoint_url": endpoint_url,
            "serving_profile": str(serving),
        }

    def _check_runtime(self, params: AttachParams) -> RuntimeTarget:
        self._advance(InstallationStatus.CHECKING, 1)
        target = runtime_target(workspace=self.ctx.job.workspace, runtime_id=params.runtime_id)
        if not target.online:
            self.ctx.emit("checking_runtime", "error", f"runtime {target.id} is {target.status}")
            raise JobFailed(f"runtime {target.id} is {target.status}")
        where = "this installation" if target.local else f"last status {target.status}"
        self.ctx.emit("checking_runtime", "ok", f"runtime {target.id} reachable ({where})")
        return target

    def _metadata(self, params: AttachParams, mode: str) -> Inspection | None:
        if not params.model.startswith("hf:"):
            return None
        ref = parse_model_id(params.model)
        try:
            return inspect_model(self.client(), ref)
        except ApplicationError as exc:
            if mode == InstallMode.PULL_FROM_SOURCE:
                raise  # nothing to download without it
            self.metadata_error = exc.message
            return None

    def _check_disk(self, target: RuntimeTarget, inspection: Inspection | None, mode: str) -> None:
        if mode != InstallMode.PULL_FROM_SOURCE:
            self.ctx.emit("checking_disk", "ok", f"disk: nothing to download ({mode})")
            return
        needed = inspection.meta.size_bytes if inspection else 0
        free = target.free_disk_bytes
        if free is None:
            self.ctx.emit(
                "checking_disk", "ok", "disk: the runtime reports no free space (advisory)"
            )
            return
        if free < needed:
            message = f"not enough free disk: {needed} bytes needed, {free} free"
            self.ctx.emit("checking_disk", "error", message)
            raise JobFailed(message)
        self.ctx.emit(
            "checking_disk",
            "ok",
            f"disk: {free} bytes free, model needs {needed}",
            {"free_bytes": free, "needed_bytes": needed},
        )

    def _check_gpu(self, target: RuntimeTarget, inspection: Inspection | None) -> None:
        if inspection is None or target.gpu_memory_mb is None:
            self.ctx.emit("checking_gpu", "ok", "gpu: no GPU memory reported (advisory)")
            return
        fits = fits_runtime(inspection, target)
        verdict = "fits" if fits.get("fits") else "may not fit"
        self.ctx.emit(
            "checking_gpu",
            "ok",
            f"gpu: model needs ~{fits['required_mb']} MB ({fits['dtype']}), "
            f"runtime has {target.gpu_memory_mb} MB: {verdict} (advisory)",
            fits,
        )

    def _emit_metadata(self, params: AttachParams, inspection: Inspection | None) -> None:
        if inspection is not None:
            meta = inspection.meta
            from models_registry.sources import recommend_runtime

            runtime, _ = recommend_runtime(inspection.parameters, meta.tags)
            message = (
                f"task={meta.pipeline_tag or '—'} · license={meta.license or '—'} · "
                f"params≈{human_parameters(inspection.parameters)} · recommended={runtime}"
            )
        elif getattr(self, "metadata_error", ""):
            message = f"metadata resolved (limited: {self.metadata_error[:80]})"
        else:
            message = f"metadata resolved from {params.provider or '—'}"
        self.ctx.emit("fetching_metadata", "ok", message)

    def _download(self, params: AttachParams, inspection: Inspection | None) -> str:
        if inspection is None:
            raise JobFailed(
                f"{params.model or 'this profile'} cannot be pulled: only Hugging Face models "
                "can be downloaded; use mount_volume or external_endpoint"
            )
        self._advance(InstallationStatus.DOWNLOADING, 0)

        def report(done: int, total: int, file: str) -> None:
            percent = int(done * 100 / total) if total else 100
            self._advance(InstallationStatus.DOWNLOADING, percent)
            self.ctx.emit(
                "downloading",
                "running",
                f"downloading weights {percent}%",
                {"progress": percent, "downloaded_bytes": done, "total_bytes": total, "file": file},
            )

        result = run_download(self.ctx, self.client(), inspection.meta, report)
        self.files_verified = len(result.files)
        usage_note(
            workspace=self.ctx.job.workspace_id,
            kind="model.pull",
            quantity=result.fetched_bytes,
            model=params.model,
        )
        return str(result.local_path)

    def _source(self, params: AttachParams) -> str:
        if (
            self.installation is not None
            and self.installation.install_mode
            and (self.installation.source_path or self.installation.endpoint_url)
        ):
            return self.installation.source_path or self.installation.endpoint_url
        return params.model

    def _check_mount(self, params: AttachParams) -> str:
        raw = self._source(params).removeprefix("file://")
        try:  # the one path guard: real path, inside MATRIX_RUNTIME_MODEL_ROOTS
            path = inside_roots(raw, settings.MATRIX_MODEL_ROOTS, what="mount path")
        except PathRefused as exc:
            self.ctx.emit("checking_mount", "error", str(exc))
            raise JobFailed(str(exc)) from exc
        problem = mount_problem(path)
        if problem:
            self.ctx.emit("checking_mount", "error", problem)
            raise JobFailed(problem)
        self.ctx.emit("checking_mount", "ok", f"model files found at {path}")
        return str(path)

    def _probe_endpoint(self, params: AttachParams) -> str:
        url = self._source(params)
        if not url.startswith(("http://", "https://")):
            raise JobFailed(f"external_endpoint needs an http(s) URL, not {url!r}")
        wanted = self.profile_model_name(params)
        try:
            served = engines.openai_models(url)
        except engines.EngineError as exc:
            self.ctx.emit("probing_endpoint", "error", exc.message)
            raise JobFailed(exc.message) from exc
        if wanted and not any(engines.model_matches(m, wanted) for m in served):
            message = f"{url} does not serve {wanted} (it serves: {', '.join(served) or 'nothing'})"
            self.ctx.emit("probing_endpoint", "error", message)
            raise JobFailed(message)
        base = engines.openai_base(url)
        self._advance(InstallationStatus.CHECKING, 50, endpoint_url=base)
        self.ctx.emit(
            "probing_endpoint", "ok", f"{base} serves {', '.join(served)}", {"models": served}
        )
        return base

    def profile_model_name(self, params: AttachParams) -> str:
        profile = ModelProfile.objects.filter(pk=params.profile_id).first()
        if profile is not None and profile.external_id:
            return profile.external_id
        return "" if params.model.startswith("http") else params.model

    def _verify(self, mode: str, local_path: str, endpoint_url: str) -> None:
        self._advance(InstallationStatus.VERIFYING, 100)
        if mode == InstallMode.PULL_FROM_SOURCE:
            count = getattr(self, "files_verified", 0)
            message = f"checksums verified · {count} files (sha256 / git blob sha1)"
        elif mode == InstallMode.MOUNT_VOLUME:
            names = sorted(p.name for p in Path(local_path).iterdir())
            message = f"mounted files readable · {', '.join(names[:6])}"
        else:
            message = f"endpoint {endpoint_url} answers /models"
        self.ctx.emit("verifying", "ok", message)

    def _serving_profile(
        self, params: AttachParams, mode: str, local_path: str, endpoint_url: str
    ) -> Path:
        engine = engines.engine_key(params.serving_engine) or "vllm"
        body = serving_profile(params, engine, mode, local_path, endpoint_url)
        folder = Path(settings.MATRIX_DATA_DIR) / "models" / "serving"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{safe_name(params.model)}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(body, indent=2))
            os.replace(tmp, path)
        except OSError as exc:
            raise JobFailed(f"create serving profile: {exc}") from exc
        label = ENGINE_NAMES.get(engine, params.serving_engine or "—")
        self.ctx.emit(
            "creating_profile",
            "ok",
            f"serving profile ({label}) created",
            {"path": str(path), "command": body.get("command")},
        )
        return path


def mount_problem(path: Path) -> str:
    """Why ``path`` is not a usable model folder, or "" when it is."""
    if not path.is_absolute():
        return f"mount path {str(path)!r} is not absolute"
    if not path.is_dir():
        return f"mount path {path} does not exist or is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"mount path {path} is not readable"
    names = [p.name for p in path.iterdir()]
    if not any(n.endswith(MODEL_FILE_SUFFIXES) for n in names):
        return f"mount path {path} holds no model weights ({', '.join(MODEL_FILE_SUFFIXES)})"
    return ""


def serving_profile(
    params: AttachParams, engine: str, mode: str, local_path: str, endpoint_url: str
) -> dict[str, Any]:
    """How to serve the installed model with ``engine``: a command line, or the URL."""
    name = params.model.removeprefix("hf:")
    quoted = shlex.quote(local_path)
    commands = {
        "vllm": f"vllm serve {quoted} --served-model-name {shlex.quote(name)}",
        "sglang": f"python -m sglang.launch_server --model-path {quoted} "
        f"--served-model-name {shlex.quote(name)}",
        "ollama": f"ollama create {shlex.quote(safe_name(name).lower())} -f Modelfile "
        f"(Modelfile: FROM {local_path})",
    }
    body: dict[str, Any] = {
        "model": params.model,
        "provider": params.provider or "—",
        "runtime": params.runtime_id,
        "install_mode": mode or "—",
        "serving_engine": params.serving_engine or "—",
        "engine": engine,
        "created_at": timezone.now().isoformat(),
    }
    if mode == InstallMode.EXTERNAL_ENDPOINT:
        body["endpoint_url"] = endpoint_url
    else:
        body["local_path"] = local_path
        body["command"] = commands.get(engine, commands["vllm"])
    return body
