"""What a model is and what it needs: the ``model.inspect`` result (the original's fields,
docs/COMPATIBILITY.md#c-12, with parameter counts from safetensors headers, the download
size, memory per dtype and whether it fits a runtime's GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models_registry.hf import GatedModel, HubClient, RepoMetadata, dtype_name
from models_registry.selectors import RuntimeTarget
from models_registry.sources import (
    DTYPE_BYTES,
    MEMORY_OVERHEAD,
    ModelRef,
    memory_estimate,
    parameters_from_name,
    recommend_runtime,
)


@dataclass
class Inspection:
    """Metadata plus the parameter count and where it came from."""

    meta: RepoMetadata
    parameters: int
    parameters_source: str
    by_dtype: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def native_dtype(self) -> str:
        """The dtype most weights are stored in (``float16`` when unknown)."""
        if not self.by_dtype:
            return "float16"
        return dtype_name(max(self.by_dtype, key=lambda key: self.by_dtype[key]))

    def memory_needed(self, dtype: str | None = None) -> int:
        per = DTYPE_BYTES[dtype or self.native_dtype]
        return int(self.parameters * per * MEMORY_OVERHEAD)


def parameters_estimate(meta: RepoMetadata, by_dtype: dict[str, int]) -> int:
    """Safetensors headers first, then the Hub's own count, then the model's name."""
    counted = sum(by_dtype.values())
    if counted > 0:
        return counted
    if meta.safetensors_total > 0:
        return meta.safetensors_total
    return parameters_from_name(meta.ref.name)


def inspect_model(client: HubClient, ref: ModelRef) -> Inspection:
    meta = client.metadata(ref)
    note = ""
    try:
        by_dtype = client.safetensors_parameters(ref, meta.commit or ref.revision, meta.files)
    except GatedModel as exc:  # the card is public, the weights are not
        by_dtype, note = {}, exc.message
    parameters = parameters_estimate(meta, by_dtype)
    if sum(by_dtype.values()) > 0:
        source = "safetensors"
    elif meta.safetensors_total > 0:
        source = "hub"
    else:
        source = "name" if parameters else "unknown"
    return Inspection(meta, parameters, source, by_dtype, note)


def fits_runtime(inspection: Inspection, runtime: RuntimeTarget) -> dict[str, Any]:
    """Whether the weights (native dtype, with overhead) fit the runtime's GPU memory."""
    required_mb = -(-inspection.memory_needed() // (1024 * 1024))
    answer: dict[str, Any] = {
        "runtime_id": runtime.id,
        "dtype": inspection.native_dtype,
        "required_mb": required_mb,
        "gpu_memory_mb": runtime.gpu_memory_mb,
    }
    if runtime.gpu_memory_mb is None:
        answer.update(fits=None, reason="the runtime reports no GPU memory")
    elif inspection.parameters <= 0:
        answer.update(fits=None, reason="the parameter count is unknown")
    else:
        answer["fits"] = required_mb <= runtime.gpu_memory_mb
    return answer


def inspection_result(inspection: Inspection) -> dict[str, Any]:
    """The wire result: the original's fields (omitted when empty) plus the new ones.

    Kept on purpose: docs/COMPATIBILITY.md#c-12.
    """
    meta, ref = inspection.meta, inspection.meta.ref
    runtime, gpu = recommend_runtime(inspection.parameters, meta.tags)
    result: dict[str, Any] = {
        "model": ref.model,
        "source": "huggingface",
        "namespace": ref.namespace,
        "name": ref.name,
        "revision": ref.revision,
    }
    optional: dict[str, Any] = {
        "commit": meta.commit,
        "pipeline_tag": meta.pipeline_tag,
        "library_name": meta.library_name,
        "license": meta.license,
        "model_type": meta.model_type,
        "estimated_parameters": inspection.parameters,
        "recommended_runtime": runtime,
    }
    result.update({key: value for key, value in optional.items() if value})
    result["requires_gpu"] = gpu
    if meta.tags:
        result["tags"] = meta.tags
    if meta.gated:
        result["gated"] = True
    if meta.private:
        result["private"] = True
    result.update(
        parameters_source=inspection.parameters_source,
        parameters_by_dtype=inspection.by_dtype,
        dtype=inspection.native_dtype,
        download_size_bytes=meta.size_bytes,
        files=len(meta.files),
        memory_bytes=memory_estimate(inspection.parameters),
    )
    if inspection.note:
        result["note"] = inspection.note
    return result
