"""Model ids and what a model's size says about how to run it, as the original parsed and
advised (docs/COMPATIBILITY.md#c-12).

Pure functions, no network. Two bugs of the original are fixed here: a name's size is
the largest *value* (``1.5B`` beats ``350M``; the original compared the bare numbers),
and a Hugging Face id carries at most one ``hf:`` however it was written
(docs/COMPATIBILITY.md#f-01).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from matrixcloud.errors import UnprocessableEntity

HF_PREFIXES = ("hf:", "huggingface:")
DEFAULT_REVISION = "main"
# A branch, tag, commit or ``refs/pr/N``: it names a file under the cache's refs/.
_REVISION_RE = re.compile(r"^(?![./-])(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,128}(?<![./])$")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([bm])\b", re.IGNORECASE)
_UNITS = {"b": 1_000_000_000, "m": 1_000_000}
# Bytes per parameter of the weights in each dtype.
DTYPE_BYTES: dict[str, float] = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int8": 1,
    "int4": 0.5,
}
# safetensors dtype names → the names above.
SAFETENSORS_DTYPES = {
    "F64": "float32",  # served as float32 at most
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I8": "int8",
    "U8": "int8",
    "F8_E4M3": "int8",
    "F8_E5M2": "int8",
}
# Weights are not all a server holds: activations, KV cache and the CUDA context.
MEMORY_OVERHEAD = 1.2


class ModelIdInvalid(UnprocessableEntity):
    """A model id that is not ``[hf:]namespace/name[@revision]``."""

    default_message = "invalid model id"


@dataclass(frozen=True)
class ModelRef:
    """A parsed Hugging Face model id."""

    namespace: str
    name: str
    revision: str = DEFAULT_REVISION

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def model(self) -> str:
        return f"hf:{self.repo_id}"


def strip_hf_prefix(value: str) -> str:
    """``value`` without any leading ``hf:``/``huggingface:`` prefixes (repeated ones too)."""
    value = value.strip()
    changed = True
    while changed:
        changed = False
        for prefix in HF_PREFIXES:
            if value.lower().startswith(prefix):
                value = value[len(prefix) :].strip()
                changed = True
    return value


def parse_model_id(raw: str, revision: str = "") -> ModelRef:
    """Parse ``hf:ns/name@rev`` (prefix and revision optional); the argument wins over
    an embedded revision, which wins over ``main``."""
    text = (raw or "").strip()
    if not text:
        raise ModelIdInvalid("empty model identifier")
    repo = strip_hf_prefix(text)
    embedded = ""
    if "@" in repo:
        repo, _, embedded = repo.rpartition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise ModelIdInvalid(f'invalid model id "{raw}" (want namespace/name)')
    namespace, name = parts[0].strip(), parts[1].strip()
    try:  # the Hub's own rule, so junk is refused here and not by the client later (a 502)
        validate_repo_id(f"{namespace}/{name}")
    except HFValidationError as exc:
        raise ModelIdInvalid(
            f'invalid model id "{raw}" (letters, digits, "-", "_" and "." only, no "--" or '
            '"..", at most 96 characters a part)'
        ) from exc
    chosen = (revision or "").strip() or embedded.strip() or DEFAULT_REVISION
    if not _REVISION_RE.match(chosen):
        raise ModelIdInvalid(
            f"invalid revision {chosen[:80]!r} (a branch, tag or commit: letters, digits, "
            '".", "_", "-" and "/", no "..", at most 128 characters)'
        )
    return ModelRef(namespace=namespace, name=name, revision=chosen)


def parameters_from_name(name: str) -> int:
    """The largest size a model name states (``7B``, ``350m``, ``1.5B``), or 0."""
    best = 0.0
    for number, unit in _SIZE_RE.findall(name):
        best = max(best, float(number) * _UNITS[unit.lower()])
    return int(best)


def recommend_runtime(parameters: int, tags: list[str]) -> tuple[str, bool]:
    """``(engine, requires_gpu)`` as the original decided it (docs/COMPATIBILITY.md#c-12)."""
    if any("gguf" in tag.lower() for tag in tags):
        return "ollama", False
    if parameters >= 7_000_000_000:
        return "vllm", True
    if 0 < parameters < 3_000_000_000:
        return "ollama", False
    return "vllm", False


def memory_estimate(parameters: int) -> dict[str, int]:
    """Bytes of memory a server needs for ``parameters`` weights in each dtype."""
    if parameters <= 0:
        return {}
    return {dtype: int(parameters * per * MEMORY_OVERHEAD) for dtype, per in DTYPE_BYTES.items()}


def human_parameters(parameters: int) -> str:
    """``7.6B``, ``350M``, ``1234`` or ``—``: the original's format (docs/COMPATIBILITY.md#c-12)."""
    if parameters <= 0:
        return "—"
    if parameters >= 1_000_000_000:
        return f"{parameters / 1e9:.1f}B"
    if parameters >= 1_000_000:
        return f"{parameters / 1e6:.0f}M"
    return str(parameters)


def safe_name(model: str) -> str:
    """A file name for ``model``: ``hf:a/b`` → ``hf--a--b``."""
    name = model.replace("/", "--").replace(":", "--").replace(" ", "_")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return name or "model"
