"""A real, resumable, verified download of a Hugging Face snapshot into the cache.

The cache uses the ``huggingface_hub`` layout (``models--<ns>--<name>/blobs``,
``snapshots/<commit>/<path>`` links, ``refs/<revision>``), so engines that read the Hub
cache (vLLM, transformers) find the files. Each file streams into
``blobs/<etag>.incomplete`` while its SHA-256 (LFS files, the Hub's checksum) or git
blob SHA-1 (small files) is computed on the way; a dropped connection is resumed with
a ``Range`` request from what is on disk, and so is a later pull after a cancel. What
was written is verified before it is moved into place: ``huggingface_hub`` itself does
not check it. Progress counts bytes on disk and never goes down.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx2
from django.conf import settings
from huggingface_hub.utils import get_session, hf_raise_for_status

from matrixcloud.errors import ApplicationError
from matrixcloud.lib.paths import PathRefused, inside_roots
from models_registry.hf import (
    HubClient,
    HubError,
    HubFile,
    HubUnreachable,
    RepoMetadata,
    hub_errors,
)
from models_registry.hub_guard import UnsafeHubName, shown
from models_registry.sources import ModelRef

CHUNK_BYTES = 1 << 18
PARALLEL_FILES = 4
RETRIES = 3
RETRY_PAUSE_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 60.0
PROGRESS_EVERY_SECONDS = 0.5


class ChecksumMismatch(ApplicationError):
    """A downloaded file does not hash to what the Hub says it is."""

    http_status = 502
    default_message = "checksum mismatch"


class NotEnoughDisk(ApplicationError):
    """The cache's file system has less free space than the download needs."""

    http_status = 507
    default_message = "not enough free disk"


class OversizedFile(ApplicationError):
    """The Hub sent more bytes than it listed for a file."""

    http_status = 502
    default_message = "the hub sent more bytes than it listed"


class DownloadStopped(Exception):
    """The job was interrupted; the partial file stays for a later resume."""


def repo_cache_dir(ref: ModelRef, cache_root: Path | None = None) -> Path:
    root = cache_root or Path(settings.MATRIX_HF_CACHE_DIR)
    return root / f"models--{ref.namespace}--{ref.name}"


@dataclass
class Progress:
    """Bytes on disk across all files, shared by the download threads."""

    total: int
    done: int = 0
    file: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, nbytes: int, file: str) -> None:
        with self._lock:
            self.done += nbytes
            self.file = file

    def snapshot(self) -> tuple[int, int, str]:
        with self._lock:
            return self.done, self.total, self.file


@dataclass
class PullResult:
    """Where the snapshot is and what it took."""

    local_path: Path
    commit: str
    files: list[HubFile]
    total_bytes: int
    fetched_bytes: int
    resumed_bytes: int


class SnapshotDownload:
    """One snapshot pull: plan, check disk, fetch missing files, link, verify."""

    def __init__(
        self,
        client: HubClient,
        meta: RepoMetadata,
        *,
        stopped: Callable[[], bool],
        cache_root: Path | None = None,
    ) -> None:
        self.client = client
        self.meta = meta
        self.ref = meta.ref
        self.stopped = stopped
        self.root = repo_cache_dir(self.ref, cache_root)
        self.fetched = 0
        self.resumed = 0
        self._count_lock = threading.Lock()
        self._abort = threading.Event()
        self.files: list[HubFile] = []
        self.blobs: list[HubFile] = []
        self.progress = Progress(total=0)

    def plan(self) -> Progress:
        """List the files and count what is already on disk (complete or partial)."""
        self.files = self.client.files(self.ref, self.meta.commit)
        if (self.meta.gated or self.meta.private) and self.files:
            # The cache is shared by the installation: files another workspace could
            # fetch are only handed out to a token Hugging Face lets read them too.
            self.client.check_access(self.ref, self.meta.commit, self.files[0].path)
        for hub_file in self.files:
            self.inside(self.snapshot_dir() / hub_file.path)  # before anything is written
        # One blob per content: files with the same content share it (and its partial).
        self.blobs = list({f.etag: f for f in self.files}.values())
        self.progress = Progress(total=sum(f.size for f in self.blobs))
        for hub_file in self.blobs:
            blob = self.blob(hub_file)
            if own_file(blob) and blob.stat().st_size == hub_file.size:
                self.progress.done += hub_file.size
            elif own_file(self.partial(hub_file)):
                self.progress.done += min(self.partial(hub_file).stat().st_size, hub_file.size)
        return self.progress

    def inside(self, path: Path) -> Path:
        """``path``, once its real path (links followed) is inside the repo's cache dir:
        nothing a listing names is written anywhere else."""
        try:
            return inside_roots(str(path), [self.root], what="cache path")
        except PathRefused:
            relative = os.path.relpath(path, self.root)
            raise UnsafeHubName(
                f'a file of "{self.ref.repo_id}" would be written outside its cache dir: '
                f"{shown(relative)}; nothing was written"
            ) from None

    def snapshot_dir(self) -> Path:
        return self.root / "snapshots" / self.meta.commit

    def missing_bytes(self) -> int:
        return max(self.progress.total - self.progress.done, 0)

    def check_disk(self) -> int:
        """Free bytes where the cache lives; :class:`NotEnoughDisk` if they fall short."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free < self.missing_bytes():
            raise NotEnoughDisk(
                f"not enough free disk: {self.missing_bytes()} bytes needed, {free} free"
            )
        return free

    def blob(self, hub_file: HubFile) -> Path:
        return self.root / "blobs" / hub_file.etag

    def partial(self, hub_file: HubFile) -> Path:
        return self.root / "blobs" / f"{hub_file.etag}.incomplete"

    def start(self) -> list[Future[None]]:
        """Start fetching every missing file; the caller watches the futures."""
        self.inside(self.root / "blobs").mkdir(parents=True, exist_ok=True)
        todo = [f for f in self.blobs if not own_file(self.blob(f))]
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="hf-pull")
        return [self._pool.submit(self._fetch, hub_file) for hub_file in todo]

    def wait(self, futures: list[Future[None]], on_tick: Callable[[], None]) -> None:
        """Wait for the fetches, calling ``on_tick`` regularly; the first failure wins.

        An interrupt returns at once (``DownloadStopped``), even while a fetch is stuck
        in a read of a silent connection: that thread writes nothing more (it checks
        the abort before each write) and ends at its read timeout at the latest.
        """
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, PROGRESS_EVERY_SECONDS, FIRST_EXCEPTION)
                on_tick()
                for future in done:
                    future.result()
                if pending and self.stopped():
                    raise DownloadStopped("interrupted")
        except BaseException:
            self._abort.set()  # the other files stop at their next chunk
            raise
        finally:
            # An interrupt does not wait for a fetch stuck in a read; a failure does.
            self._pool.shutdown(wait=not self.stopped(), cancel_futures=True)

    def finish(self) -> PullResult:
        """Link the snapshot and record the revision's commit."""
        snapshot = self.snapshot_dir()
        for hub_file in self.files:
            link = snapshot / hub_file.path
            self.inside(link.parent).mkdir(parents=True, exist_ok=True)
            self.inside(link.parent)  # no link in the way was followed by the mkdir
            target = os.path.relpath(self.blob(hub_file), link.parent)
            if link.is_symlink() or link.is_file():
                link.unlink()  # never follows the link
            link.symlink_to(target)
        refs = self.inside(self.root / "refs")
        refs.mkdir(parents=True, exist_ok=True)
        ref_file = self.inside(refs / self.ref.revision.replace("/", "--"))
        if ref_file.is_symlink():
            ref_file.unlink()
        ref_file.write_text(self.meta.commit)
        return PullResult(
            local_path=snapshot,
            commit=self.meta.commit,
            files=self.files,
            total_bytes=self.progress.total,
            fetched_bytes=self.fetched,
            resumed_bytes=self.resumed,
        )

    # --- one file -----------------------------------------------------------------------
    def _fetch(self, hub_file: HubFile) -> None:
        partial = self.partial(hub_file)
        for attempt in range(RETRIES + 1):
            try:
                digest = self._stream(hub_file, partial)
                break
            except HubUnreachable:
                if attempt == RETRIES or self.stopped():
                    raise
                time.sleep(RETRY_PAUSE_SECONDS)
            except DownloadStopped:
                if partial.exists() and partial.stat().st_size == 0:
                    partial.unlink()  # nothing to resume from
                raise
            except OversizedFile:
                self.progress.add(-partial.stat().st_size, hub_file.path)
                partial.unlink()  # a bad copy must not be resumed from
                raise
        self._verify(hub_file, partial, digest.hexdigest())
        partial.replace(self.blob(hub_file))  # replaces a link in the way, never follows it

    def _stream(self, hub_file: HubFile, partial: Path) -> Any:
        """Fetch what ``partial`` lacks; the hash of the whole file so far. Reads no more
        than the listed size (nor than the answer's Content-Length)."""
        if partial.is_symlink():
            partial.unlink()  # the download never makes one: not followed
        have = partial.stat().st_size if partial.exists() else 0
        if have > hub_file.size:
            partial.unlink()
            self.progress.add(-have, hub_file.path)
            have = 0
        digest = new_digest(hub_file)
        if have:
            hash_file(partial, digest)
        if have and have == hub_file.size:
            return digest
        headers = self.client.headers()
        if have:
            headers["Range"] = f"bytes={have}-"
        url = self.client.file_url(self.ref, self.meta.commit, hub_file.path)
        timeout = httpx2.Timeout(READ_TIMEOUT_SECONDS, connect=10.0)
        with (
            hub_errors(self.ref),
            get_session().stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=timeout
            ) as response,
        ):
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            if have and response.status_code != 206:  # the server ignored the Range
                self.progress.add(-have, hub_file.path)
                have, digest = 0, new_digest(hub_file)
            with self._count_lock:
                self.resumed += have
            room = hub_file.size - have
            with open_no_follow(partial, append=bool(have)) as out:
                for chunk in response.iter_raw(CHUNK_BYTES):
                    if self._abort.is_set() or self.stopped():
                        raise DownloadStopped(hub_file.path)
                    if len(chunk) > room:
                        out.write(chunk[: max(room, 0)])
                        raise OversizedFile(
                            f"the hub sent more than the {hub_file.size} bytes it listed for "
                            f'{shown(hub_file.path)} of "{self.ref.repo_id}": stopped there'
                        )
                    room -= len(chunk)
                    out.write(chunk)
                    digest.update(chunk)
                    self.progress.add(len(chunk), hub_file.path)
                    with self._count_lock:
                        self.fetched += len(chunk)
        return digest

    def _verify(self, hub_file: HubFile, partial: Path, got: str) -> None:
        size = partial.stat().st_size
        if got == hub_file.etag and size == hub_file.size:
            return
        partial.unlink()  # a bad copy must not be resumed from
        self.progress.add(-size, hub_file.path)
        kind = "sha256" if hub_file.sha256 else "git blob sha1"
        raise ChecksumMismatch(
            f"checksum mismatch for {hub_file.path}: expected {kind} {hub_file.etag}, got {got}"
        )


def own_file(path: Path) -> bool:
    """A regular file the download made (a link, whatever it points to, is not one)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def open_no_follow(path: Path, *, append: bool) -> BinaryIO:
    """``path`` opened for writing without following a link at its last part."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o644), "ab" if append else "wb")


def new_digest(hub_file: HubFile) -> Any:
    """The hash a file is named by on the Hub: SHA-256 (LFS) or its git blob SHA-1."""
    if hub_file.sha256 is not None:
        return hashlib.sha256()
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\0" % hub_file.size)
    return digest


def hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES * 4):
            digest.update(chunk)


__all__ = [
    "ChecksumMismatch",
    "DownloadStopped",
    "HubError",
    "NotEnoughDisk",
    "Progress",
    "PullResult",
    "SnapshotDownload",
    "hash_file",
    "new_digest",
    "repo_cache_dir",
]
