"""Writes for the models registry: import, attach, installation failure; and the two
Hugging Face reads the API answers at once (search, resolve)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Workspace
from accounts.principals import Actor
from accounts.services.usage import usage_record
from jobs.models import Job
from jobs.services import job_enqueue
from matrixcloud.errors import ApplicationError, UpstreamError
from models_registry.choices import InstallationStatus, InstallMode, ProfileStatus
from models_registry.engines import user_url_check
from models_registry.hf import SEARCH_DEFAULT_LIMIT, SEARCH_MAX_LIMIT, HubClient, HubError
from models_registry.models import ModelInstallation, ModelProfile
from models_registry.selectors import runtime_target
from models_registry.sources import parse_model_id, recommend_runtime, strip_hf_prefix

logger = logging.getLogger(__name__)
HF_PROVIDER = "Hugging Face"


def usage_note(*, workspace: Workspace | str, kind: str, quantity: int = 1, **meta: Any) -> None:
    """Meter a model operation (nothing to meter: nothing recorded)."""
    if quantity >= 1:
        usage_record(workspace=workspace, kind=kind, quantity=quantity, meta=meta or None)


# --- search and resolve ---------------------------------------------------------------
def hf_search(*, query: str, task: str, limit: int | None) -> dict[str, Any]:
    """Live search; any failure is an empty, not-live answer that says why."""
    if limit is None or limit <= 0 or limit > SEARCH_MAX_LIMIT:
        limit = SEARCH_DEFAULT_LIMIT
    try:
        items = HubClient.for_workspace(None, purpose="model search").search(query, task, limit)
    except HubError as exc:
        return {"items": [], "live": False, "error": exc.message}
    return {"items": items, "live": True}


def _is_hf_source(data: dict[str, Any]) -> bool:
    return (
        data.get("sourceType") == "huggingface"
        or str(data.get("model") or "").startswith("hf:")
        or data.get("provider") == HF_PROVIDER
    )


def source_resolve(*, workspace: Workspace, data: dict[str, Any]) -> dict[str, Any]:
    """A profile preview (nothing stored). Hugging Face ids are resolved live at the
    requested branch; a failure is a 502 that says why."""
    if not _is_hf_source(data):
        return _other_source_preview(data)
    raw = data.get("externalId") or data.get("model") or ""
    try:
        ref = parse_model_id(strip_hf_prefix(raw), data.get("branch") or "")
        meta = HubClient.for_workspace(workspace, purpose="model resolve").metadata(ref)
    except ApplicationError as exc:  # a bad id, a hub failure: the preview says why
        raise UpstreamError(f"could not resolve model: {exc.message}") from exc
    from models_registry.inspection import parameters_estimate

    parameters = parameters_estimate(meta, {})
    runtime, gpu = recommend_runtime(parameters, meta.tags)
    return {
        "source_type": "huggingface",
        "provider": HF_PROVIDER,
        "external_id": ref.repo_id,
        "display_name": ref.repo_id,
        "source_uri": ref.model if ref.revision == "main" else f"{ref.model}@{ref.revision}",
        "revision": ref.revision,
        "commit": meta.commit,
        "task": meta.pipeline_tag,
        "library": meta.library_name,
        "license": meta.license,
        "requires_gpu": gpu,
        "recommended_runtime": runtime,
        "estimated_parameters": parameters,
        "tags": meta.tags,
        "private": meta.private,
        "gated": meta.gated,
        "size_bytes": meta.size_bytes,
    }


def _other_source_preview(data: dict[str, Any]) -> dict[str, Any]:
    uri = str(data.get("sourceUri") or "")
    if data.get("path"):
        uri = uri.rstrip("/") + "/" + str(data["path"]).lstrip("/")
    name = data.get("externalId") or uri
    return {
        "source_type": data.get("sourceType") or "",
        "provider": data.get("provider") or "",
        "external_id": name,
        "display_name": name,
        "source_uri": uri,
        "task": "text-generation",
        "library": "custom",
        "license": "review required",
        "private": bool(data.get("private")),
        "recommended_runtime": "vLLM / SGLang",
    }


# --- profiles --------------------------------------------------------------------------
def profile_import(*, actor: Actor, data: dict[str, Any]) -> ModelProfile:
    """Store a profile (duplicates allowed, as the original); audited."""
    fields = {
        key: str(data.get(key) or "")
        for key in (
            "source_type",
            "source_uri",
            "provider",
            "external_id",
            "display_name",
            "task",
            "library",
            "license",
        )
    }
    if fields["provider"] == HF_PROVIDER or fields["source_type"] == "huggingface":
        fields["external_id"] = strip_hf_prefix(fields["external_id"])
    fields["display_name"] = fields["display_name"] or fields["external_id"]
    with transaction.atomic():
        profile = ModelProfile.objects.create(
            workspace=actor.workspace,
            tags=data.get("tags"),
            metadata=data.get("metadata"),
            **fields,
        )
        audit_record(
            action="model.imported",
            actor=actor.id,
            workspace=actor.workspace,
            target=profile.display_name or profile.id,
            ip=actor.ip,
            meta={
                "profile_id": profile.id,
                "provider": profile.provider,
                "external_id": profile.external_id,
            },
        )
    return profile


def attach_model_string(profile: ModelProfile) -> str:
    if profile.is_huggingface:
        return "hf:" + strip_hf_prefix(profile.external_id or profile.source_uri)
    return profile.source_uri


def profile_attach(
    *,
    actor: Actor,
    profile: ModelProfile,
    runtime_id: str,
    install_mode: str,
    serving_engine: str,
    source_path: str = "",
    endpoint_url: str = "",
) -> tuple[ModelInstallation, Job]:
    """Check the runtime, then write the installation, queue the profile and enqueue the
    ``model.attach`` job that does the work; audited."""
    runtime_target(workspace=actor.workspace, runtime_id=runtime_id)  # 404 if not ours
    mode = install_mode or InstallMode.PULL_FROM_SOURCE
    probed = endpoint_url or profile.source_uri
    if mode == InstallMode.EXTERNAL_ENDPOINT and probed.startswith(("http://", "https://")):
        user_url_check(probed)  # a 422 naming the egress guard's refusal, before any row
    with transaction.atomic():
        installation = ModelInstallation.objects.create(
            workspace=actor.workspace,
            profile=profile,
            runtime_id=runtime_id,
            install_mode=mode,
            serving_engine=serving_engine,
            source_path=source_path,
            endpoint_url=endpoint_url,
        )
        profile.set_status(ProfileStatus.QUEUED)
        payload = {
            "installation_id": installation.id,
            "profile_id": profile.id,
            "model": attach_model_string(profile),
            "provider": profile.provider,
            "runtime_id": runtime_id,
            "install_mode": mode,
            "serving_engine": serving_engine,
        }
        job = job_enqueue(
            actor=actor,
            job_type="model.attach",
            payload=payload,
            ttl_seconds=0,  # the maximum: a real download takes its time
        )
        installation.job_id = job.pk
        installation.save(update_fields=["job_id"])
        audit_record(
            action="model.attached",
            actor=actor.id,
            workspace=actor.workspace,
            target=profile.display_name or profile.id,
            ip=actor.ip,
            meta={
                "runtime_id": runtime_id,
                "job_id": job.pk,
                "installation_id": installation.id,
                "install_mode": mode,
            },
        )
    return installation, job


# --- installation outcomes ------------------------------------------------------------
def installation_fail(*, installation_id: str, reason: str) -> bool:
    """Mark an active installation and its profile ``failed`` with ``reason``."""
    reason = reason or "installation failed"
    with transaction.atomic():
        installation = (
            ModelInstallation.objects.select_for_update().filter(pk=installation_id).first()
        )
        if installation is None or installation.status not in InstallationStatus.active():
            return False
        installation.advance(InstallationStatus.FAILED, error=reason)
        if installation.profile_id:
            ModelProfile.objects.filter(pk=installation.profile_id).update(
                status=ProfileStatus.FAILED, error=reason, updated_at=timezone.now()
            )
    return True
