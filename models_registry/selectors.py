"""Reads for the models registry: profiles, installations, and the runtime a model goes to."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from accounts.models import Workspace
from matrixcloud.errors import NotFound
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.detection import detect_runtimes
from runtimes.selectors import runtime_get

NVIDIA_SMI_TIMEOUT_SECONDS = 5


def profile_get(*, workspace: Workspace, profile_id: str) -> ModelProfile:
    """A profile of ``workspace``; another workspace's is a 404 like a missing one."""
    profile = ModelProfile.objects.for_workspace(workspace).filter(pk=profile_id).first()
    if profile is None:
        raise NotFound("model profile not found")
    return profile


def profile_list(*, workspace: Workspace) -> list[ModelProfile]:
    return list(ModelProfile.objects.for_workspace(workspace).order_by("-created_at", "-pk"))


def installation_list(*, workspace: Workspace) -> list[ModelInstallation]:
    return list(
        ModelInstallation.objects.for_workspace(workspace)
        .select_related("profile")
        .order_by("-created_at", "-pk")
    )


def profile_json(profile: ModelProfile) -> dict[str, Any]:
    """The contract's profile shape (plus ``error`` when it failed)."""
    body: dict[str, Any] = {
        "id": profile.id,
        "source_type": profile.source_type,
        "source_uri": profile.source_uri,
        "provider": profile.provider,
        "external_id": profile.external_id,
        "display_name": profile.display_name,
        "task": profile.task,
        "library": profile.library,
        "license": profile.license,
        "tags": profile.tags,
        "status": profile.status,
        "created_at": profile.created_at,
        "metadata": profile.metadata,
    }
    if profile.error:
        body["error"] = profile.error
    return body


def installation_json(installation: ModelInstallation) -> dict[str, Any]:
    profile = installation.profile
    body: dict[str, Any] = {
        "id": installation.id,
        "model_profile_id": installation.profile_id or "",
        "runtime_id": installation.runtime_id,
        "install_mode": installation.install_mode,
        "serving_engine": installation.serving_engine,
        "status": installation.status,
        "progress": installation.progress,
        "local_path": installation.local_path,
        "endpoint_url": installation.endpoint_url,
        "job_id": installation.job_id,
        "model_name": profile.display_name if profile else "",
        "provider": profile.provider if profile else "",
        "updated_at": installation.updated_at,
    }
    if installation.error:
        body["error"] = installation.error
    return body


@dataclass
class RuntimeTarget:
    """The runtime an install goes to, with what it reports about itself."""

    id: str
    local: bool
    online: bool
    status: str
    gpu_memory_mb: int | None = None
    free_disk_bytes: int | None = None
    engines: dict[str, Any] = field(default_factory=dict)


def runtime_target(*, workspace: Workspace, runtime_id: str) -> RuntimeTarget:
    """This installation (by its runtime id, or ``local``) or a registered runtime of the
    workspace; another workspace's runtime is a 404."""
    if runtime_id in (settings.MATRIX_RUNTIME_ID, "local"):
        return local_target()
    runtime = runtime_get(workspace=workspace, runtime_id=runtime_id)
    resources = runtime.resources if isinstance(runtime.resources, dict) else {}
    status = runtime.effective_status()
    engines = resources.get("engines")
    return RuntimeTarget(
        id=runtime.id,
        local=False,
        online=runtime.is_online(),
        status=str(status),
        gpu_memory_mb=_int_or_none(resources.get("gpu_memory_mb")),
        free_disk_bytes=_int_or_none(resources.get("free_disk_bytes")),
        engines=engines if isinstance(engines, dict) else {},
    )


def local_target() -> RuntimeTarget:
    cache = Path(settings.MATRIX_HF_CACHE_DIR)
    cache.mkdir(parents=True, exist_ok=True)
    return RuntimeTarget(
        id=settings.MATRIX_RUNTIME_ID,
        local=True,
        online=True,
        status="online",
        gpu_memory_mb=local_gpu_memory_mb(),
        free_disk_bytes=shutil.disk_usage(cache).free,
        engines=dict(detect_runtimes()),
    )


def local_gpu_memory_mb() -> int | None:
    """Total memory of this machine's largest NVIDIA GPU (nvidia-smi), or None."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_SECONDS,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sizes = [int(line.strip()) for line in out.splitlines() if line.strip().isdigit()]
    return max(sizes) if sizes else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
