"""This installation as a runtime of another control plane: join, store, heart-beat.

``manage.py join`` registers with a join token and stores what it got (control plane
URL, runtime id, runtime token) in ``<data dir>/cloud-runtime.json``, created with mode
0600 like the installation's keys; the token is never printed or logged. The heartbeat
loop (``join`` in the foreground, or ``runtime_heartbeat`` under ``serve``) then reports
this installation's status, capabilities and resources every
``MATRIX_RUNTIME_CLOUD_HEARTBEAT_SECONDS``. Every HTTP call has a timeout; failures back
off (doubling, at most :data:`MAX_BACKOFF` seconds) and never end the loop, because a
supervised role that exits is restarted and one that keeps exiting stops ``serve``.
On stop the loop sends one last heartbeat saying ``offline``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from jobs.selectors import active_job_count
from matrixcloud.lib import http
from matrixcloud.lib.backoff import Backoff
from runtimes.detection import ENGINES, detect_runtimes, endpoint_answers, engine_urls
from runtimes.selectors import local_runtime_describe

logger = logging.getLogger(__name__)

CREDENTIAL_FILE = "cloud-runtime.json"
HTTP_TIMEOUT = 10.0
FINAL_BEAT_TIMEOUT = 3.0
MAX_BACKOFF = 60.0
MAX_INTERVAL = 300.0
NVIDIA_SMI_TIMEOUT = 5.0
ENGINE_TIMEOUT = 0.5
REGISTER_PATH = "/v1/cloud/runtimes/register"
HEARTBEAT_PATH = "/v1/cloud/runtimes/heartbeat"


class ControlPlaneError(Exception):
    """The control plane refused a call or could not be reached; ``status`` 0 = no answer."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credential:
    """What ``join`` stored: where this runtime is registered and the token it uses there."""

    control_plane: str
    runtime_id: str
    runtime_token: str
    workspace_id: str
    joined_at: str


# --- the stored credential ----------------------------------------------------------


def credential_path() -> Path:
    return Path(settings.MATRIX_DATA_DIR) / CREDENTIAL_FILE


def credential_stored() -> bool:
    """True when this installation has joined a control plane (``serve`` then heart-beats)."""
    return credential_path().is_file()


def credential_load(path: Path | None = None) -> Credential | None:
    """The stored credential, or None when this installation has not joined anything."""
    path = path or credential_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    try:
        return Credential(**{field: str(raw[field]) for field in Credential.__dataclass_fields__})
    except (KeyError, TypeError) as exc:
        raise ControlPlaneError(f"{path} is not a runtime credential ({exc})") from exc


def credential_store(credential: Credential, path: Path | None = None) -> Path:
    """Write the credential (mode 0600 from the start, then renamed into place)."""
    path = path or credential_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(credential), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


# --- HTTP to the control plane ------------------------------------------------------


def normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ControlPlaneError(f"not an http(s) URL: {url!r}")
    return url.strip().rstrip("/")


def post_json(
    url: str, body: dict[str, Any], *, token: str = "", timeout: float = HTTP_TIMEOUT
) -> dict[str, Any]:
    """POST ``body`` as JSON; the decoded answer, or ControlPlaneError with its message."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        reply = http.fetch("POST", url, json=body, headers=headers, timeout=timeout)
    except http.Unreachable as exc:
        raise ControlPlaneError(str(exc)) from None
    if reply.status >= 400:
        raise ControlPlaneError(_error_message(reply), reply.status)
    if not reply.text.strip():
        return {}
    if not isinstance(reply.json, dict):
        raise ControlPlaneError(f"{url}: the answer is not a JSON object")
    return dict(reply.json)


def _error_message(reply: http.Reply) -> str:
    message = reply.json.get("error") if isinstance(reply.json, dict) else None
    return str(message or f"HTTP {reply.status}")


# --- what this installation reports -------------------------------------------------


def gpu_inventory() -> list[dict[str, Any]]:
    """GPUs as ``nvidia-smi`` sees them (advisory: none when it is absent or fails)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.rsplit(",", 2)]
        try:
            name, total, free = fields[0], int(float(fields[1])), int(float(fields[2]))
        except (ValueError, IndexError):
            continue  # "[N/A]" and such: nothing to report for this GPU
        gpus.append({"name": name, "memory_mb": total, "memory_free_mb": free})
    return gpus


def _get_json(url: str) -> Any:
    """A local engine's JSON answer, never through a proxy; None when it fails."""
    try:
        reply = http.fetch("GET", url, timeout=ENGINE_TIMEOUT, proxy=False)
    except http.Unreachable:
        return None
    return reply.json if reply.ok else None


def loaded_models() -> list[str]:
    """Models the local serving engines have loaded (Ollama ``/api/ps``, OpenAI-style
    ``/v1/models`` of vLLM and SGLang); engines that do not answer add nothing."""
    models: list[str] = []
    for engine, base in engine_urls().items():
        if not endpoint_answers(base, engine.probe_path, timeout=ENGINE_TIMEOUT):
            continue
        if engine.name == "ollama":
            payload = _get_json(base + "/api/ps") or {}
            models += [str(m.get("name")) for m in payload.get("models", []) if m.get("name")]
        else:
            payload = _get_json(base + "/v1/models") or {}
            models += [str(m.get("id")) for m in payload.get("data", []) if m.get("id")]
    return sorted(set(models))


def _memory_mb() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (OSError, ValueError, AttributeError):
        return None


def resources_collect() -> dict[str, Any]:
    """GPU memory, engines present, loaded models, free disk of the data dir, CPUs, RAM."""
    gpus = gpu_inventory()
    present = detect_runtimes()
    resources: dict[str, Any] = {
        "engines": sorted(e.name for e in ENGINES if present.get(e.name)),
        "loaded_models": loaded_models(),
        "free_disk_bytes": shutil.disk_usage(settings.MATRIX_DATA_DIR).free,
        "cpu_count": os.cpu_count(),
        "memory_mb": _memory_mb(),
    }
    if gpus:
        resources["gpus"] = gpus
        resources["gpu_memory_mb"] = sum(gpu["memory_mb"] for gpu in gpus)
        resources["gpu_memory_free_mb"] = sum(gpu["memory_free_mb"] for gpu in gpus)
    return resources


def local_status() -> str:
    """``busy`` at the job limit, ``degraded`` without a live worker and sandbox host,
    else ``online``."""
    if active_job_count() >= settings.MATRIX_MAX_CONCURRENT_JOBS:
        return "busy"
    return "online" if local_runtime_describe()["status"] == "Online" else "degraded"


def self_description() -> dict[str, Any]:
    """What a registration says about this installation (besides the join token)."""
    from jobs.registry import registered_types

    return {
        "kind": "matrixcloud",
        "mode": settings.MATRIX_MODE,
        "version": settings.VERSION,
        "caps": registered_types(),
        "resources": resources_collect(),
    }


# --- join and heartbeat -------------------------------------------------------------


def join(
    *, control_plane: str, join_token: str, name: str = "", url: str = "", region: str = ""
) -> Credential:
    """Register with ``control_plane`` and store the credential; raises ControlPlaneError."""
    base = normalise_url(control_plane)
    body = {
        "join_token": join_token,
        "name": name or socket.gethostname(),
        "url": url,
        "region": region,
        **self_description(),
    }
    answer = post_json(base + REGISTER_PATH, body)
    try:
        runtime, token = answer["runtime"], str(answer["runtime_token"])
        credential = Credential(
            control_plane=base,
            runtime_id=str(runtime["id"]),
            runtime_token=token,
            workspace_id=str(runtime.get("workspace_id", "")),
            joined_at=timezone.now().isoformat(),
        )
    except (KeyError, TypeError) as exc:
        raise ControlPlaneError(f"unexpected answer from {base}: missing {exc}") from None
    credential_store(credential)
    return credential


def heartbeat(
    credential: Credential, *, status: str = "", timeout: float = HTTP_TIMEOUT
) -> dict[str, Any]:
    """Send one heartbeat; the runtime as the control plane now records it. A parting
    ``offline`` carries the status only (no probes on the way out)."""
    from jobs.registry import registered_types

    body: dict[str, Any] = {"status": status or local_status()}
    if body["status"] != "offline":
        body.update(
            caps=registered_types(), resources=resources_collect(), version=settings.VERSION
        )
    answer = post_json(
        credential.control_plane + HEARTBEAT_PATH,
        body,
        token=credential.runtime_token,
        timeout=timeout,
    )
    return dict(answer.get("runtime") or {})


def heartbeat_loop(
    credential: Credential,
    stop: threading.Event,
    *,
    interval: float | None = None,
    say: Callable[[str], None] = logger.info,
) -> int:
    """Beat every ``interval`` s until ``stop`` is set; back off on failures; say
    ``offline`` once on the way out. Returns the number of accepted heartbeats."""
    interval = min(interval or settings.MATRIX_RUNTIME_CLOUD_HEARTBEAT_SECONDS, MAX_INTERVAL)
    accepted, failing = 0, False
    retry = Backoff(min(interval, MAX_BACKOFF), MAX_BACKOFF)
    while not stop.is_set():
        try:
            heartbeat(credential)
        except ControlPlaneError as exc:
            delay = next(retry)
            refused = " (token revoked or runtime removed? rejoin)" if exc.status == 401 else ""
            say(f"heartbeat to {credential.control_plane} failed: {exc}{refused}; "
                f"retrying in {delay:.0f} s")  # fmt: skip
            failing = True
            stop.wait(delay)
            continue
        if failing or accepted == 0:
            say(f"heart-beating to {credential.control_plane} as {credential.runtime_id}")
        accepted, failing = accepted + 1, False
        retry.reset()
        stop.wait(interval)
    try:
        heartbeat(credential, status="offline", timeout=FINAL_BEAT_TIMEOUT)
        say(f"told {credential.control_plane} that {credential.runtime_id} is offline")
    except ControlPlaneError as exc:
        say(f"could not say offline to {credential.control_plane}: {exc}")
    return accepted
