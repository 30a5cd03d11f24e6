"""A real Hugging Face Hub stand-in: an HTTP server on 127.0.0.1 in a thread.

It serves the routes ``huggingface_hub`` 2.4 calls: search
(``GET /api/models``), model info (``GET /api/models/<repo>[/revision/<rev>]``, with
``?blobs=true`` sizes and LFS checksums), the tree (``GET /api/models/<repo>/tree/<rev>``),
paths-info (``POST /api/models/<repo>/paths-info/<rev>``) and files
(``HEAD|GET /<repo>/resolve/<rev>/<path>``, with ``ETag``, ``X-Repo-Commit``,
``X-Linked-Etag``/``X-Linked-Size`` for LFS files and ``Range`` → 206). Errors carry the
``X-Error-Code`` the client maps: ``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``.

Faults for tests: ``cut_once`` (the first full GET of a path sends half its bytes and
drops the connection), ``corrupt`` (a path's bytes differ from the checksum the hub
announces), ``rate`` (bytes per second, so a download can be caught mid-way) and
``fail_search``, ``stall`` (a path's body stops half way and the connection stays
open, silent, until ``released``). Every request is logged as ``(method, path, headers)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.loopback import LoopbackServer

LFS_MIN_SIZE = 1024
CHUNK = 1 << 20
STALL_SECONDS = 30.0


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]], fill: int = 7) -> bytes:
    """A valid safetensors file: ``{name: (dtype, shape)}``, every byte ``fill``."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes([fill]) * offset


@dataclass
class HubFileEntry:
    """One file: its bytes (in memory or on disk), size and checksums."""

    path: str
    data: bytes | None = None
    disk: Path | None = None
    size: int = 0
    sha256: str = ""
    blob_id: str = ""

    @classmethod
    def of(cls, path: str, content: bytes | Path) -> HubFileEntry:
        if isinstance(content, Path):
            size = content.stat().st_size
            digest = hashlib.sha256()
            blob = hashlib.sha1(b"blob %d\0" % size)  # noqa: S324 (git's blob id)
            with content.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    blob.update(chunk)
            return cls(
                path, disk=content, size=size, sha256=digest.hexdigest(), blob_id=blob.hexdigest()
            )
        return cls(
            path,
            data=content,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            blob_id=git_blob_sha1(content),
        )

    @property
    def lfs(self) -> bool:
        return self.size >= LFS_MIN_SIZE or self.path.endswith((".safetensors", ".gguf", ".bin"))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.blob_id,
            "size": self.size,
            "path": self.path,
        }
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return entry

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        assert self.disk is not None
        with self.disk.open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


@dataclass
class FakeRepo:
    """A model repo with one or more revisions (branch → commit → files)."""

    repo_id: str
    pipeline_tag: str = "text-generation"
    library_name: str = "transformers"
    tags: list[str] = field(default_factory=list)
    license: str = "apache-2.0"
    model_type: str = "llama"
    downloads: int = 0
    likes: int = 0
    gated: bool = False
    private: bool = False
    allowed_tokens: set[str] = field(default_factory=set)
    revisions: dict[str, str] = field(default_factory=dict)  # branch → commit
    commits: dict[str, dict[str, HubFileEntry]] = field(default_factory=dict)

    def add_revision(self, branch: str, files: dict[str, bytes | Path]) -> str:
        entries = {path: HubFileEntry.of(path, content) for path, content in files.items()}
        seed = json.dumps(sorted((p, e.sha256) for p, e in entries.items())) + branch
        commit = hashlib.sha1(f"{self.repo_id}:{seed}".encode()).hexdigest()  # noqa: S324
        self.revisions[branch] = commit
        self.commits[commit] = entries
        return commit

    def commit_of(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.revisions.get(revision)

    def may_read(self, authorization: str) -> bool:
        if not (self.gated or self.private):
            return True
        token = authorization.removeprefix("Bearer ").strip()
        return bool(token) and token in self.allowed_tokens

    def info(self, commit: str, with_blobs: bool) -> dict[str, Any]:
        files = self.commits[commit]
        siblings = []
        for entry in files.values():
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs:
                    sibling["lfs"] = {
                        "size": entry.size,
                        "sha256": entry.sha256,
                        "pointerSize": 134,
                    }
            siblings.append(sibling)
        return {
            "_id": commit[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "sha": commit,
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name,
            "tags": [*self.tags, f"license:{self.license}"],
            "gated": "manual" if self.gated else False,
            "private": self.private,
            "downloads": self.downloads,
            "likes": self.likes,
            "cardData": {"license": self.license},
            "config": {"model_type": self.model_type},
            "siblings": siblings,
        }

    def search_item(self) -> dict[str, Any]:
        return {
            "_id": self.repo_id,
            "id": self.repo_id,
            "modelId": self.repo_id,
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name,
            "tags": self.tags,
            "downloads": self.downloads,
            "likes": self.likes,
            "gated": "manual" if self.gated else False,
            "private": self.private,
        }


class FakeHub(LoopbackServer):
    """The server and its state; use as a context manager or call ``start``/``stop``."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.cut_once: set[str] = set()
        self.corrupt: set[str] = set()
        self.rate: float = 0.0
        # Paths whose next full GET sends half its bytes, then holds the connection open
        # without sending more until ``released`` is set (at most STALL_SECONDS).
        self.stall: set[str] = set()
        self.released = threading.Event()
        self.fail_search = False
        self._lock = threading.Lock()

    # --- setup -----------------------------------------------------------------
    def add(self, repo: FakeRepo, files: dict[str, bytes | Path] | None = None) -> FakeRepo:
        if files is not None:
            repo.add_revision("main", files)
        self.repos[repo.repo_id] = repo
        return repo

    def start(self) -> FakeHub:
        hub = self

        class Handler(HubRequestHandler):
            fake = hub

        self._serve(Handler)
        return self

    def log(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def gets_of(self, file_path: str) -> list[dict[str, str]]:
        """Headers of every GET of a file (any repo, any revision)."""
        with self._lock:
            return [
                headers
                for method, path, headers in self.requests
                if method == "GET" and "/resolve/" in path and path.endswith("/" + file_path)
            ]

    def take_cut(self, path: str) -> bool:
        with self._lock:
            if path in self.cut_once:
                self.cut_once.discard(path)
                return True
            return False


RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
API_RE = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)"
    r"(?:/(?P<kind>revision|tree|paths-info)/(?P<rev>[^/]+)(?:/(?P<sub>.*))?)?$"
)


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes of the fake hub (see the module docstring)."""

    fake: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- plumbing --------------------------------------------------------------
    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _route(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.fake.log(self.command, path, {k.title(): v for k, v in self.headers.items()})
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if path == "/api/models" and self.command == "GET":
            return self._search(query)
        matched = API_RE.match(path)
        if matched:
            return self._api(matched, query)
        matched = RESOLVE_RE.match(path)
        if matched and self.command in ("GET", "HEAD"):
            return self._resolve(matched["repo"], matched["rev"], matched["path"])
        return self._error(404, "NotFound", f"no route {path}")

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        self._route()

    # --- routes ----------------------------------------------------------------
    def _search(self, query: dict[str, str]) -> None:
        if self.fake.fail_search:
            return self._error(500, "Internal", "search is down")
        text = query.get("search", "").lower()
        task = query.get("pipeline_tag", "")
        hits = [
            repo
            for repo in self.fake.repos.values()
            if text in repo.repo_id.lower()
            and (not task or repo.pipeline_tag == task)
            and not repo.private
        ]
        if query.get("sort") == "downloads":
            hits.sort(key=lambda repo: repo.downloads, reverse=True)
        limit = int(query.get("limit") or 1000)
        self._json(200, [repo.search_item() for repo in hits[:limit]])

    def _repo(self, repo_id: str, revision: str) -> tuple[FakeRepo, str] | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None or (
            repo.private and not repo.may_read(self.headers.get("Authorization", ""))
        ):
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        commit = repo.commit_of(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        return repo, commit

    def _api(self, matched: re.Match[str], query: dict[str, str]) -> None:
        found = self._repo(matched["repo"], unquote(matched["rev"] or "main"))
        if found is None:
            return None
        repo, commit = found
        kind = matched["kind"]
        files = repo.commits[commit]
        if kind in (None, "revision") and self.command == "GET":
            return self._json(
                200,
                repo.info(
                    commit, with_blobs=query.get("blobs") == "True" or query.get("blobs") == "true"
                ),
            )
        if kind == "tree" and self.command == "GET":
            prefix = (matched["sub"] or "").strip("/")
            entries = [
                e.tree_entry()
                for p, e in sorted(files.items())
                if not prefix or p.startswith(prefix + "/")
            ]
            return self._json(200, entries)
        if kind == "paths-info" and self.command == "POST":
            form = parse_qs(self._body.decode())
            if not form:
                form = {"paths": json.loads(self._body or b"{}").get("paths", [])}
            wanted = form.get("paths", [])
            return self._json(200, [files[p].tree_entry() for p in wanted if p in files])
        return self._error(405, "MethodNotAllowed", "method not allowed")

    def _resolve(self, repo_id: str, revision: str, file_path: str) -> None:
        found = self._repo(repo_id, revision)
        if found is None:
            return None
        repo, commit = found
        if not repo.may_read(self.headers.get("Authorization", "")):
            return self._error(403, "GatedRepo", "Access to model is restricted")
        entry = repo.commits[commit].get(file_path)
        if entry is None:
            return self._error(404, "EntryNotFound", f"{file_path} does not exist")
        start, end = 0, entry.size
        status = 200
        wanted = self.headers.get("Range", "")
        ranged = re.match(r"bytes=(\d+)-(\d*)$", wanted.strip())
        if ranged:
            start = int(ranged[1])
            end = min(int(ranged[2]) + 1, entry.size) if ranged[2] else entry.size
            if start >= entry.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{entry.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/octet-stream")
        if entry.lfs:
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(entry.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{entry.size}")
        self.end_headers()
        if self.command == "HEAD":
            return None
        cut = status == 200 and self.fake.take_cut(file_path)
        held = status == 200 and not cut and file_path in self.fake.stall
        self._send_body(
            entry,
            start,
            end if not (cut or held) else start + (end - start) // 2,
            corrupt=file_path in self.fake.corrupt,
        )
        if held:
            self.wfile.flush()
            self.fake.released.wait(STALL_SECONDS)
            self.close_connection = True
            return None
        if cut:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_body(self, entry: HubFileEntry, start: int, end: int, *, corrupt: bool) -> None:
        if entry.disk is not None and not corrupt and not self.fake.rate:
            with entry.disk.open("rb") as handle:
                self.connection.sendfile(handle, offset=start, count=end - start)
            return
        position = start
        step = CHUNK if not self.fake.rate else max(1024, int(self.fake.rate / 20))
        while position < end:
            chunk = entry.read(position, min(position + step, end))
            if corrupt and position == start:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            try:
                self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            position += len(chunk)
            if self.fake.rate:
                time.sleep(len(chunk) / self.fake.rate)


def tiny_model_files(
    hidden: int = 64, layers: int = 2, dtype: str = "F16"
) -> dict[str, bytes | Path]:
    """A small but real model folder: config, tokenizer config, safetensors weights."""
    tensors: dict[str, tuple[str, list[int]]] = {"embed.weight": (dtype, [256, hidden])}
    for layer in range(layers):
        tensors[f"layers.{layer}.attn.weight"] = (dtype, [hidden, hidden])
        tensors[f"layers.{layer}.mlp.weight"] = (dtype, [hidden, hidden * 4])
    config = {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers}
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "tokenizer_config.json": b'{"model_max_length": 512}',
        "model.safetensors": safetensors_bytes(tensors),
    }


def tiny_parameter_count(hidden: int = 64, layers: int = 2) -> int:
    return 256 * hidden + layers * (hidden * hidden + hidden * hidden * 4)


GATED_TOKEN = "hf_test_token_with_access"


def standard_hub() -> FakeHub:
    """The repos the model tests use (not started)."""
    hub = FakeHub()
    tiny = hub.add(FakeRepo("acme/tiny-llama-1B", downloads=500, likes=7), tiny_model_files())
    tiny.add_revision("dev", tiny_model_files(hidden=32, layers=1))
    hub.add(
        FakeRepo("acme/encoder-350m", pipeline_tag="feature-extraction",
                 library_name="sentence-transformers", downloads=900, model_type="bert"),
        tiny_model_files(hidden=16, layers=1),
    )  # fmt: skip
    hub.add(
        FakeRepo("acme/gated-7B", downloads=300, gated=True, allowed_tokens={GATED_TOKEN}),
        tiny_model_files(),
    )
    hub.add(
        FakeRepo("acme/quant-GGUF", downloads=20, tags=["gguf"], library_name="gguf"),
        {"README.md": b"# quant\n", "model-q4.gguf": b"GGUF" + bytes(4000)},
    )
    big = tiny_model_files(hidden=64, layers=1)
    big["model-00002.safetensors"] = safetensors_bytes({"big": ("F16", [1024, 1024])}, fill=3)
    hub.add(FakeRepo("acme/big-model-2B", downloads=50), big)
    return hub
