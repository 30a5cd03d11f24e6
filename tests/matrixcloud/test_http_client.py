"""matrixcloud.lib.http against a real loopback server (http.server in a thread)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from matrixcloud.lib.http import Reply, Unreachable, fetch, is_loopback


class Handler(BaseHTTPRequestHandler):
    """Answers by path; remembers what it was sent."""

    seen: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length) if length else b""
        self.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": sent}
        )
        if self.path.endswith("/echo"):
            echo = {"method": self.command, "body": json.loads(sent) if sent else None}
            self._answer(200, json.dumps(echo).encode())
        elif self.path.endswith("/refused"):
            self._answer(403, b'{"error": "no", "status": 403}')
        elif self.path.endswith("/text"):
            self._answer(200, b"plain words", "text/plain")
        elif self.path.endswith("/big"):
            self._answer(200, b"[" + b"1," * 50_000 + b"1]")
        elif self.path.endswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.endswith("/slow"):
            time.sleep(1.0)
            self._answer(200, b"{}")
        else:
            self._answer(404, b"")

    do_GET = do_POST = do_DELETE = _route


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_json_body_goes_and_comes_back(server):
    reply = fetch("POST", server + "/echo", json={"a": [1, 2]}, headers={"X-Try": "1"})
    assert reply == Reply(200, reply.text, {"method": "POST", "body": {"a": [1, 2]}})
    assert reply.ok
    sent = Handler.seen[-1]
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["X-Try"] == "1"


def test_an_error_status_is_an_answer_not_an_exception(server):
    reply = fetch("GET", server + "/refused")
    assert (reply.status, reply.json, reply.ok) == (403, {"error": "no", "status": 403}, False)
    assert fetch("DELETE", server + "/nothing") == Reply(404, "", None)


def test_a_body_that_is_not_json_is_text_only(server):
    reply = fetch("GET", server + "/text")
    assert (reply.status, reply.text, reply.json) == (200, "plain words", None)


def test_at_most_max_bytes_are_read_and_a_cut_body_is_not_json(server):
    assert fetch("GET", server + "/big").json == [1] * 50_001
    cut = fetch("GET", server + "/big", max_bytes=10)
    assert (cut.text, cut.json) == ("[1,1,1,1,1", None)


def test_redirects_are_followed_unless_told(server):
    assert fetch("GET", server + "/moved").json == {"method": "GET", "body": None}
    assert fetch("GET", server + "/moved", follow_redirects=False).status == 302


@pytest.mark.parametrize(
    "url",
    [
        lambda: f"http://127.0.0.1:{closed_port()}/echo",  # refused
        lambda: "http://name.invalid/echo",  # no such name
        lambda: "ftp://127.0.0.1/echo",  # not http(s)
        lambda: "not a url",
    ],
)
def test_no_answer_is_unreachable(url):
    target = url()
    with pytest.raises(Unreachable) as caught:
        fetch("GET", target, timeout=5)
    assert caught.value.url == target
    assert caught.value.reason


def test_a_timeout_is_unreachable(server):
    started = time.monotonic()
    with pytest.raises(Unreachable):
        fetch("GET", server + "/slow", timeout=0.2)
    assert time.monotonic() - started < 0.9


def test_the_proxy_variables_apply_except_to_loopback_and_when_told(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server)  # our server plays the proxy
    monkeypatch.setenv("NO_PROXY", "")
    proxied = fetch("GET", "http://name.invalid/echo")
    assert proxied.json == {"method": "GET", "body": None}
    assert Handler.seen[-1]["path"] == "http://name.invalid/echo"  # absolute form: a proxy's

    with pytest.raises(Unreachable):  # not proxied: the name does not resolve
        fetch("GET", "http://name.invalid/echo", proxy=False, timeout=5)

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # a dead proxy
    assert fetch("GET", server + "/echo").ok  # loopback: straight there


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://localhost:1/x", True),
        ("http://127.0.0.2/x", True),
        ("http://[::1]:8/x", True),
        ("http://10.0.0.1/x", False),
        ("https://example.com/x", False),
    ],
)
def test_is_loopback(url, loopback):
    assert is_loopback(url) is loopback
