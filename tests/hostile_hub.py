"""A hostile Hugging Face endpoint: a real server on loopback (the fake hub's routes)
whose answers an attacker chose, and a victim server that records what reaches it.

``HostileHub.serve_listing(repo, entries, sha=...)`` makes the repo answer exactly
``entries`` as its tree listing (and its siblings), with ``sha`` as its commit; a
resolve of any listed name answers that entry's bytes (``content``). ``oversize`` sends
more bytes than listed for a name; ``redirect`` answers a resolve with a 302.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.fake_hub import API_RE, RESOLVE_RE, FakeHub, HubRequestHandler, git_blob_sha1
from tests.loopback import LoopbackServer

HOSTILE_COMMIT = "c0ffee" + "0" * 34


@dataclass
class Listed:
    """One entry of a crafted listing: names as the attacker wrote them."""

    path: str
    content: bytes = b"hub bytes\n"
    oid: str | None = None  # the blob id; None: the content's git blob sha1
    lfs_sha256: str | None = None  # an LFS entry when set ("" for the content's sha256)
    size: int | None = None

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.oid if self.oid is not None else git_blob_sha1(self.content),
            "size": self.size if self.size is not None else len(self.content),
            "path": self.path,
        }
        if self.lfs_sha256 is not None:
            sha = self.lfs_sha256 or hashlib.sha256(self.content).hexdigest()
            entry["lfs"] = {"oid": sha, "size": entry["size"], "pointerSize": 134}
        return entry


@dataclass
class Crafted:
    sha: str
    entries: list[Listed]
    oversize: dict[str, int] = field(default_factory=dict)  # name → bytes to send
    redirect: dict[str, str] = field(default_factory=dict)  # name → Location
    drop_oid: bool = False  # tree entries without their "oid" (a malformed answer)


class HostileHub(FakeHub):
    def __init__(self) -> None:
        super().__init__()
        self.crafted: dict[str, Crafted] = {}
        self.sent_bytes = 0

    def serve_listing(
        self, repo_id: str, entries: list[Listed], *, sha: str = HOSTILE_COMMIT
    ) -> Crafted:
        crafted = Crafted(sha, entries)
        self.crafted[repo_id] = crafted
        return crafted

    def start(self) -> HostileHub:
        hub = self

        class Handler(HostileHandler):
            fake = hub

        self._serve(Handler)
        return self


class HostileHandler(HubRequestHandler):
    fake: HostileHub

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        api = API_RE.match(path)
        resolve = RESOLVE_RE.match(path)
        if not any(m and m["repo"] in self.fake.crafted for m in (api, resolve)):
            return super()._route()  # an honest repo
        self.fake.log(self.command, path, {k.title(): v for k, v in self.headers.items()})
        if api:
            return self._crafted_api(self.fake.crafted[api["repo"]], api["kind"])
        assert resolve is not None
        return self._crafted_file(self.fake.crafted[resolve["repo"]], resolve["path"])

    def _crafted_api(self, crafted: Crafted, kind: str | None) -> None:
        entries = [entry.tree_entry() for entry in crafted.entries]
        if kind == "tree":
            if crafted.drop_oid:
                return self._json(
                    200, [{k: v for k, v in e.items() if k != "oid"} for e in entries]
                )
            return self._json(200, entries)
        siblings = [{"rfilename": e["path"], "size": e["size"]} for e in entries]
        info = {"id": "x", "sha": crafted.sha, "siblings": siblings, "tags": []}
        return self._json(200, info)

    def _crafted_file(self, crafted: Crafted, name: str) -> None:
        location = crafted.redirect.get(name)
        if location is not None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        entry = next((e for e in crafted.entries if e.path == name), None)
        if entry is None:
            return self._error(404, "EntryNotFound", "no such file")
        sending = crafted.oversize.get(name)
        length = sending if sending is not None else len(entry.content)
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command == "HEAD":
            return None
        try:
            if sending is None:
                self.wfile.write(entry.content)
            else:
                block = entry.content[:1] * (1 << 16)
                left = sending
                while left > 0:
                    self.wfile.write(block[: min(left, len(block))])
                    left -= len(block)
                    self.fake.sent_bytes += len(block)
        except (BrokenPipeError, ConnectionResetError):
            return None
        return None


class Victim(LoopbackServer):
    """A server an attacker would like the control plane to reach: records every hit."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> Victim:
        victim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _hit(self) -> None:
                with victim._lock:
                    victim.hits.append(f"{self.command} {self.path}")
                raw = json.dumps({"secret": "from the victim"}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_HEAD = do_POST = _hit

        self._serve(Handler)
        return self
