"""The Hugging Face client: metadata, search, file listings, through ``huggingface_hub``.

Every call goes to ``settings.HF_ENDPOINT`` (a mirror or a test server in place of
huggingface.co) with the workspace's ``huggingface`` provider credential, else
``HF_TOKEN``, else no token at all (never a token saved in the server's home).
Failures become :class:`HubError` with the original's messages, which say "gated" and
"not found" plainly (docs/COMPATIBILITY.md#c-12).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2
from django.conf import settings
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)
from huggingface_hub.utils import get_session, hf_raise_for_status

from accounts.models import Workspace
from accounts.principals import Actor
from accounts.services.providers import provider_secret_read
from matrixcloud.errors import UpstreamError
from models_registry import hub_guard
from models_registry.sources import SAFETENSORS_DTYPES, ModelRef

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoFile

logger = logging.getLogger(__name__)
TIMEOUT_SECONDS = 30.0
SEARCH_TIMEOUT_SECONDS = 10.0
SEARCH_DEFAULT_LIMIT = 16
SEARCH_MAX_LIMIT = 50
SAFETENSORS_PARALLEL = 8


class HubError(UpstreamError):
    """Hugging Face refused or failed a request; the message says why."""


class GatedModel(HubError):
    """The repo is gated or private and the token (if any) has no access."""


class ModelNotFound(HubError):
    """No such repo, revision or file."""


class HubUnreachable(HubError):
    """The connection failed or dropped: worth another try."""


def hf_endpoint() -> str:
    return str(settings.HF_ENDPOINT).rstrip("/")


def hf_token(workspace: Workspace | None, *, purpose: str) -> str | None:
    """The workspace's Hugging Face credential, else ``HF_TOKEN``, else None."""
    if workspace is not None:
        secret = provider_secret_read(
            actor=Actor.system(workspace), provider="huggingface", label="default", purpose=purpose
        )
        if secret:
            return secret
    return str(settings.HF_TOKEN) if settings.HF_TOKEN else None


@dataclass(frozen=True)
class HubFile:
    """One file of a repo at a commit, with what its content must hash to."""

    path: str
    size: int
    blob_id: str  # the git blob sha1
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass
class RepoMetadata:
    """What Hugging Face says about a model at a revision."""

    ref: ModelRef
    commit: str
    pipeline_tag: str = ""
    library_name: str = ""
    license: str = ""
    model_type: str = ""
    tags: list[str] = field(default_factory=list)
    gated: bool = False
    private: bool = False
    safetensors_total: int = 0
    files: list[str] = field(default_factory=list)
    size_bytes: int = 0


class HubClient:
    """Calls to one Hugging Face endpoint with one token (or none)."""

    def __init__(self, token: str | None = None, endpoint: str | None = None) -> None:
        self.endpoint = endpoint or hf_endpoint()
        # False: never fall back to a token saved in this process's home directory.
        self.token: str | bool = token or False
        # Imported here: huggingface_hub.hf_api is ~12 MiB in every Django process (this
        # module is imported by the job handlers' registration), and only a client needs it.
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=self.endpoint, token=self.token)

    @classmethod
    def for_workspace(cls, workspace: Workspace | None, *, purpose: str) -> HubClient:
        return cls(token=hf_token(workspace, purpose=purpose))

    def metadata(self, ref: ModelRef) -> RepoMetadata:
        """Metadata of ``ref`` at its revision (files with their sizes included)."""
        with hub_errors(ref):
            info = self.api.model_info(
                ref.repo_id, revision=ref.revision, files_metadata=True, timeout=TIMEOUT_SECONDS
            )
        return _metadata_from_info(ref, info)

    def search(self, query: str, task: str, limit: int) -> list[dict[str, Any]]:
        """Models matching ``query`` (and ``task``), most downloaded first.

        One request without retries (``HfApi.list_models`` retries for ~23 s): a search
        box must answer at once, with ``live: false`` when the hub is away.
        """
        from huggingface_hub.hf_api import ModelInfo

        params: dict[str, Any] = {"sort": "downloads", "direction": -1, "limit": limit}
        if query.strip():
            params["search"] = query.strip()
        if task not in ("", "any"):
            params["pipeline_tag"] = task
        with hub_errors(None):
            response = get_session().get(
                f"{self.endpoint}/api/models",
                params=params,
                headers=self.headers(),
                timeout=SEARCH_TIMEOUT_SECONDS,
            )
            hf_raise_for_status(response)
            found = response.json()
            if not isinstance(found, list):
                raise ValueError("the search answer is not a list")
            items = [item for item in found if isinstance(item, dict)]
            for item in items:
                item.setdefault("id", item.get("modelId", ""))
            return [_search_item(ModelInfo(**item)) for item in items]

    def files(self, ref: ModelRef, commit: str) -> list[HubFile]:
        """Every file of the repo at ``commit``, with sizes and checksums."""
        from huggingface_hub.hf_api import RepoFile

        with hub_errors(ref):
            entries = list(self.api.list_repo_tree(ref.repo_id, revision=commit, recursive=True))
        files = [_hub_file(ref.repo_id, entry) for entry in entries if isinstance(entry, RepoFile)]
        return hub_guard.distinct_paths(ref.repo_id, files)

    def safetensors_parameters(
        self, ref: ModelRef, commit: str, files: list[str]
    ) -> dict[str, int]:
        """Parameters per dtype, counted from the safetensors headers (Range reads)."""
        names = [name for name in files if name.endswith(".safetensors")]
        if not names:
            return {}

        def parse(name: str) -> dict[str, int]:
            with hub_errors(ref):
                meta = self.api.parse_safetensors_file_metadata(
                    ref.repo_id, name, revision=commit, timeout=TIMEOUT_SECONDS
                )
            return {str(dtype): int(count) for dtype, count in meta.parameter_count.items()}

        counts: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=min(SAFETENSORS_PARALLEL, len(names))) as pool:
            for per_file in pool.map(parse, names):
                for dtype, count in per_file.items():
                    counts[dtype] = counts.get(dtype, 0) + int(count)
        return counts

    def check_access(self, ref: ModelRef, commit: str, path: str) -> None:
        """A HEAD of one file with this client's token; :class:`GatedModel` if refused."""
        from huggingface_hub import get_hf_file_metadata

        with hub_errors(ref):
            get_hf_file_metadata(
                self.file_url(ref, commit, path), token=self.token, timeout=TIMEOUT_SECONDS
            )

    def file_url(self, ref: ModelRef, commit: str, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(ref.repo_id, path, revision=commit, endpoint=self.endpoint)

    def headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token)


def _hub_file(repo: str, entry: RepoFile) -> HubFile:
    """One listed file, every name in it checked before it can become a path."""
    path = hub_guard.file_name(repo, entry.path)
    return HubFile(
        path=path,
        size=hub_guard.size(repo, path, entry.size),
        blob_id=hub_guard.blob_id(repo, entry.blob_id),
        sha256=hub_guard.sha256(repo, entry.lfs.sha256) if entry.lfs is not None else None,
    )


def _metadata_from_info(ref: ModelRef, info: Any) -> RepoMetadata:
    card = info.card_data.to_dict() if info.card_data is not None else {}
    tags = list(info.tags or [])
    license_ = card.get("license") or ""
    if isinstance(license_, list):
        license_ = license_[0] if license_ else ""
    if not license_:
        license_ = next((t[len("license:") :] for t in tags if t.startswith("license:")), "")
    siblings = list(info.siblings or [])
    safetensors = getattr(info, "safetensors", None)
    return RepoMetadata(
        ref=ref,
        commit=hub_guard.commit(ref.repo_id, info.sha),
        pipeline_tag=info.pipeline_tag or "",
        library_name=info.library_name or "",
        license=str(license_),
        model_type=str((info.config or {}).get("model_type") or ""),
        tags=tags,
        gated=_truthy_gate(info.gated),
        private=bool(info.private),
        safetensors_total=int(safetensors.total) if safetensors is not None else 0,
        files=[hub_guard.file_name(ref.repo_id, s.rfilename) for s in siblings],
        size_bytes=sum(
            hub_guard.size(ref.repo_id, s.rfilename, s.size) for s in siblings if s.size is not None
        ),
    )


def _truthy_gate(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false")
    return bool(value)


def _search_item(info: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"id": info.id}
    optional = {
        "pipeline_tag": info.pipeline_tag,
        "downloads": info.downloads,
        "likes": info.likes,
        "tags": list(info.tags) if info.tags else None,
        "library_name": info.library_name,
        "gated": _truthy_gate(info.gated),
        "private": bool(info.private),
    }
    item.update({key: value for key, value in optional.items() if value})
    return item


def dtype_name(safetensors_dtype: str) -> str:
    return SAFETENSORS_DTYPES.get(safetensors_dtype.upper(), "float32")


@contextmanager
def hub_errors(ref: ModelRef | None) -> Iterator[None]:
    """Turn what ``huggingface_hub`` and ``httpx2`` raise into :class:`HubError`."""
    repo = ref.repo_id if ref else ""
    try:
        yield
    except GatedRepoError as exc:
        status = exc.response.status_code if exc.response is not None else 403
        raise GatedModel(
            f'model "{repo}" is gated or private; set HF_TOKEN with access (status {status})'
        ) from exc
    except RevisionNotFoundError as exc:
        rev = ref.revision if ref else ""
        raise ModelNotFound(f'model "{repo}" not found at revision "{rev}"') from exc
    except RemoteEntryNotFoundError as exc:
        raise ModelNotFound(f'file not found in model "{repo}": {_first_line(exc)}') from exc
    except RepositoryNotFoundError as exc:
        status = exc.response.status_code if exc.response is not None else 404
        rev = ref.revision if ref else ""
        if status in (401, 403):  # what Hugging Face answers for private and missing alike
            raise ModelNotFound(
                f'model "{repo}" not found at revision "{rev}" (or private: set HF_TOKEN with '
                f"access; status {status})"
            ) from exc
        raise ModelNotFound(f'model "{repo}" not found at revision "{rev}"') from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise HubError(f'hugging face returned status {status} for "{repo}"') from exc
    except SafetensorsParsingError as exc:
        raise HubError(f"could not read safetensors metadata: {_first_line(exc)}") from exc
    except (httpx2.HTTPError, OfflineModeIsEnabled) as exc:
        raise HubUnreachable(
            f"hugging face request failed (no network or DNS?): {_first_line(exc)}"
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:  # a body that is not the JSON expected
        raise HubError(f"decode hf response: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
