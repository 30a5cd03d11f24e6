"""A package registry on loopback, npm's and PyPI's dialects, for the install step.

It serves what ``npm install`` and ``uv pip install`` ask for, and nothing else: an
npm packument (``GET /<name>``) whose tarball it also serves, and a PEP 503 simple
index (``GET /simple/<name>/``) with its wheels. The packages are built here: an npm
tarball with one file, an MCP server in plain Node, and a wheel with one module, an
MCP server in the standard library. ``stall`` makes every tarball and wheel answer
hang (the install then waits until stopped); ``hits`` counts requests by path.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_BOUND = 60.0

NODE_MCP = r"""#!/usr/bin/env node
// A minimal MCP server over stdio: one tool, "hello".
const readline = require("readline");
const rl = readline.createInterface({ input: process.stdin });
const send = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");
rl.on("line", (line) => {
  let msg;
  try { msg = JSON.parse(line); } catch (e) { return; }
  if (msg.id === undefined) return;
  if (msg.method === "initialize") {
    send({ jsonrpc: "2.0", id: msg.id, result: {
      protocolVersion: msg.params.protocolVersion, capabilities: { tools: {} },
      serverInfo: { name: "NAME", version: "1.0.0" } } });
  } else if (msg.method === "tools/list") {
    send({ jsonrpc: "2.0", id: msg.id, result: { tools: [{ name: "hello",
      description: "Say hello", inputSchema: { type: "object",
      properties: { who: { type: "string" } } } }] } });
  } else if (msg.method === "tools/call") {
    const who = (msg.params.arguments || {}).who || "world";
    send({ jsonrpc: "2.0", id: msg.id, result: {
      content: [{ type: "text", text: "hello " + who + " from NAME" }] } });
  } else {
    send({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "no such method" } });
  }
});
"""

PYTHON_MCP = r"""
import json, sys

def main():
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "id" not in msg:
            continue
        if msg["method"] == "initialize":
            result = {"protocolVersion": msg["params"]["protocolVersion"],
                      "capabilities": {"tools": {}},
                      "serverInfo": {"name": "NAME", "version": "1.0"}}
        elif msg["method"] == "tools/list":
            result = {"tools": [{"name": "hello", "description": "Say hello",
                      "inputSchema": {"type": "object"}}]}
        elif msg["method"] == "tools/call":
            who = (msg["params"].get("arguments") or {}).get("who", "world")
            result = {"content": [{"type": "text", "text": f"hello {who} from NAME"}]}
        else:
            reply = {"jsonrpc": "2.0", "id": msg["id"],
                     "error": {"code": -32601, "message": "no such method"}}
            print(json.dumps(reply), flush=True)
            continue
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""


def npm_tarball(name: str, version: str) -> bytes:
    """An ``npm pack``-shaped tarball: ``package/package.json`` and ``package/index.js``."""
    manifest = {"name": name, "version": version, "bin": {name: "index.js"}}
    files = {
        "package/package.json": json.dumps(manifest).encode(),
        "package/index.js": NODE_MCP.replace("NAME", name).encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def wheel(name: str, version: str) -> tuple[str, bytes]:
    """A wheel with one module and a console script named ``name``; its file name."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": PYTHON_MCP.replace("NAME", name),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[console_scripts]\n{name} = {module}:main\n",
    }
    record = io.StringIO()
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.write(f"{path},sha256={digest.decode()},{len(text.encode())}\n")
    record.write(f"{info}/RECORD,,\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in {**files, f"{info}/RECORD": record.getvalue()}.items():
            archive.writestr(path, text)
    return f"{module}-{version}-py3-none-any.whl", buffer.getvalue()


@dataclass
class FakeRegistry:
    """The packages served, the request counts, and the stall switch."""

    npm: dict[str, bytes] = field(default_factory=dict)  # name → tarball (version 1.0.0)
    wheels: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name → file
    hits: Counter[str] = field(default_factory=Counter)
    stall: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def add_npm(self, name: str) -> None:
        self.npm[name] = npm_tarball(name, "1.0.0")

    def add_wheel(self, name: str) -> None:
        self.wheels[name] = wheel(name, "1.0")

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"

    def packument(self, name: str) -> dict[str, object]:
        tarball = self.npm[name]
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        version = {
            "name": name,
            "version": "1.0.0",
            "bin": {name: "index.js"},
            "dist": {
                "tarball": f"{self.url}/{name}/-/{name}-1.0.0.tgz",
                "shasum": hashlib.sha1(tarball).hexdigest(),  # noqa: S324 (npm's format)
                "integrity": integrity,
            },
        }
        return {"name": name, "dist-tags": {"latest": "1.0.0"}, "versions": {"1.0.0": version}}


def _handler(registry: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # uv asks before it downloads a wheel
            self.do_GET()

        def _stall(self) -> None:
            deadline = time.monotonic() + STALL_BOUND
            while registry.stall.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            registry.hits[path] += 1
            name = path.strip("/").replace("%2f", "/").replace("%2F", "/")
            if name in registry.npm:
                body = json.dumps(registry.packument(name)).encode()
                return self._send(200, body, "application/json")
            for npm_name, tarball in registry.npm.items():
                if path == f"/{npm_name}/-/{npm_name}-1.0.0.tgz":
                    self._stall()
                    return self._send(200, tarball, "application/octet-stream")
            for wheel_name, (file_name, data) in registry.wheels.items():
                if path == f"/simple/{wheel_name}/":
                    digest = hashlib.sha256(data).hexdigest()
                    link = f'<a href="/files/{file_name}#sha256={digest}">{file_name}</a>'
                    return self._send(
                        200, f"<html><body>{link}</body></html>".encode(), "text/html"
                    )
                if path == f"/files/{file_name}":
                    self._stall()
                    return self._send(200, data, "application/octet-stream")
            return self._send(404, b'{"error":"not found"}', "application/json")

    return Handler


class Serving:
    """The registry's server, which can be taken down (its port then refuses
    connections) and brought back on the same port."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def up(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.registry))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.registry.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()
        self.server = server

    def down(self) -> None:
        self.registry.stall.clear()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)

    @contextmanager
    def unreachable(self) -> Iterator[None]:
        """Connections to the registry's address are refused inside the block."""
        self.down()
        try:
            yield
        finally:
            self.up()


@contextmanager
def serving(registry: FakeRegistry) -> Iterator[Serving]:
    """Serve ``registry`` on 127.0.0.1 for the block; its ``url`` is set."""
    served = Serving(registry)
    served.up()
    try:
        yield served
    finally:
        served.down()
