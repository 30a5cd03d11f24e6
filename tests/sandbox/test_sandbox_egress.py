"""Sandbox egress by allowlist: the session's proxy is its one route out.

Two real upstreams listen in a network namespace made here (root: ``ip netns``, a
veth pair), at two addresses the sandbox host routes to: one on the session's list,
one not. A real MCP server (tests/fixtures/servers/egress_probe.py) in a real
bubblewrap sandbox fetches through its proxy, tunnels with ``CONNECT`` and tries raw
sockets. What is listed gets through; what is not is refused (403), reported as an
``egress_denied`` event and counted; a raw socket reaches nothing; loopback and
metadata addresses are refused even when listed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sandbox.egress import AllowEntry, EgressRefused, entry_parse, requested_check
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from tests.jobs.test_jobs_worker import wait_for
from tests.sandbox_processes import (
    SERVERS,
    Host,
    end_all_sessions,
    events,
    running_host,
    steps,
    wait_step,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SESSIONS = "/v1/sandbox/sessions"
NET = 200 + os.getpid() % 50  # 10.<NET>.77.0/24: unlikely to clash with the machine's
ALLOWED, REFUSED, HOST_SIDE = f"10.{NET}.77.2", f"10.{NET}.77.3", f"10.{NET}.77.1"
PORT = 8080
CEILING = f"10.{NET}.0.0/16,localhost,127.0.0.1,169.254.169.254"
PROBE = f"python3 {SERVERS / 'egress_probe.py'}"
UPSTREAM = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = sys.argv[2].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer((sys.argv[1], 8080), H).serve_forever()
"""

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 to make the upstreams' network namespace",
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[None]:
    """A namespace with the two upstreams, reached from here through a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make the upstreams' network namespace")
    name = f"mceg{os.getpid() % 100000}"
    outside, inside = f"{name}h", f"{name}n"
    ip("netns", "add", name)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", name)
        ip("addr", "add", f"{HOST_SIDE}/24", "dev", outside)
        ip("link", "set", outside, "up")
        for address in (ALLOWED, REFUSED):
            ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
        ip("-n", name, "link", "set", inside, "up")
        ip("-n", name, "link", "set", "lo", "up")
        for address, body in ((ALLOWED, "allowed upstream"), (REFUSED, "refused upstream")):
            argv = ["ip", "netns", "exec", name, sys.executable, "-c", UPSTREAM, address, body]
            servers.append(subprocess.Popen(argv))
        for address in (ALLOWED, REFUSED):
            wait_for(lambda a=address: reachable(a), 10, f"the upstream at {address}")
        yield
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=5)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def reachable(address: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}:{PORT}/", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def loopback_secret() -> Iterator[int]:
    """A server on the host's loopback that no sandbox may reach: its port."""

    class Secret(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"host secret")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Secret)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def host(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory, upstreams: None
) -> Iterator[Host]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("these tests run servers under bubblewrap, which is unavailable here")
    overrides = {
        "MATRIX_RUNTIME_EGRESS_CEILING": CEILING,
        "MATRIX_RUNTIME_EGRESS_ALLOW": f"10.{NET}.0.0/16",  # private: allowed when listed
    }
    with running_host(tmp_path_factory.mktemp("host") / "host.log", **overrides) as running:
        yield running


@pytest.fixture(autouse=True)
def ceiling(settings: Any) -> None:
    settings.MATRIX_EGRESS_CEILING = CEILING.split(",")


@pytest.fixture
def clean(host: Host) -> Iterator[None]:
    yield
    end_all_sessions()


def ready(api: Any, allow: list[str]) -> dict[str, Any]:
    response = api.post(SESSIONS, {"start_command": PROBE, "network_allow": allow})
    assert response.status_code == 202, response.content
    created = dict(response.json())
    wait_step(created["job_id"], "ready", 30)
    return created


def probe(api: Any, session_id: str, tool: str, **arguments: Any) -> dict[str, Any]:
    body = {"name": tool, "arguments": arguments}
    response = api.post(f"{SESSIONS}/{session_id}/tools/call", body, format="json")
    assert response.status_code == 200, response.content
    text = "".join(part["text"] for part in response.json()["result"]["content"])
    return dict(json.loads(text))


def denials(job_id: str) -> list[dict[str, Any]]:
    return [event.data for event in events(job_id) if event.step == "egress_denied"]


@needs_netns
def test_listed_gets_through_unlisted_is_denied_and_reported_raw_reaches_nothing(
    api: Any, clean: None
) -> None:
    created = ready(api, [ALLOWED])
    job_id, session_id = created["job_id"], created["session_id"]
    assert ("egress", "ok") in steps(job_id)

    assert probe(api, session_id, "fetch", url=f"http://{ALLOWED}:{PORT}/") == {
        "status": 200,
        "body": "allowed upstream",
    }
    refused = probe(api, session_id, "fetch", url=f"http://{REFUSED}:{PORT}/")
    assert refused["status"] == 403
    assert "refused upstream" not in refused["body"]
    wait_for(lambda: len(denials(job_id)) == 1, 10, "the egress_denied event")
    first = denials(job_id)[0]
    assert (first["host"], first["port"], first["count"]) == (REFUSED, PORT, 1)
    assert "allowlist" in first["reason"]

    tunnelled = probe(api, session_id, "tunnel", host=ALLOWED, port=PORT)
    assert " 200 " in tunnelled["status"]
    assert "allowed upstream" in tunnelled["body"]
    assert " 403 " in probe(api, session_id, "tunnel", host=REFUSED, port=PORT)["status"]
    wait_for(lambda: len(denials(job_id)) == 2, 10, "the second egress_denied event")

    for address in (ALLOWED, REFUSED, HOST_SIDE):  # past the proxy: no route at all
        outcome = probe(api, session_id, "raw", host=address, port=PORT)
        assert outcome["connected"] is False, outcome

    snapshot = api.get(f"{SESSIONS}/{session_id}").json()
    assert snapshot["egress"] == {"mode": "allowlist", "allow": [ALLOWED], "denied": 2}


@needs_netns
def test_loopback_and_metadata_are_refused_even_when_listed(
    api: Any, clean: None, loopback_secret: int
) -> None:
    created = ready(api, ["localhost", "127.0.0.1", "169.254.169.254"])
    job_id, session_id = created["job_id"], created["session_id"]
    # NO_PROXY sends localhost straight to the sandbox's own loopback (nothing there),
    # so the proxy is asked directly, as a server that ignores NO_PROXY would.
    for host in ("localhost", "127.0.0.1"):
        outcome = probe(api, session_id, "tunnel", host=host, port=loopback_secret)
        assert " 403 " in outcome["status"], (host, outcome)
        assert "host secret" not in outcome.get("body", "")
    outcome = probe(api, session_id, "fetch", url="http://169.254.169.254/latest/meta-data/")
    assert outcome["status"] == 403, outcome
    wait_for(lambda: len(denials(job_id)) == 3, 10, "three egress_denied events")
    reasons = [denial["reason"] for denial in denials(job_id)]
    assert "loopback" in reasons[0]
    assert "loopback" in reasons[1]
    assert "metadata" in reasons[2]
    # the sandbox's own loopback is its own: the host's server is not there
    outcome = probe(api, session_id, "raw", host="127.0.0.1", port=loopback_secret)
    assert outcome["connected"] is False


def test_network_allow_outside_the_ceiling_or_unreadable_is_a_422(api: Any) -> None:
    for allow, expected in (
        (["example.com"], "MATRIX_RUNTIME_EGRESS_CEILING"),
        (["10.9.0.0/8"], "outside"),
        (["bad host!"], "not a host name"),
        (["example.com:99999"], "no valid port"),
    ):
        body = {"start_command": PROBE, "network_allow": allow}
        response = api.post(SESSIONS, body)
        assert response.status_code == 422, (allow, response.content)
        assert expected in json.dumps(response.json()), response.json()


def test_allowlist_entries_read_and_compare_as_documented() -> None:
    assert entry_parse("API.GitHub.com").admits("api.github.com", 443)
    assert not entry_parse("api.github.com").admits("evil.api.github.com.example", 443)
    star = entry_parse("*.github.com")
    assert star.admits("api.github.com", 443)
    assert not star.admits("github.com.evil.net", 443)
    assert entry_parse("example.com:443").admits("example.com", 443)
    assert not entry_parse("example.com:443").admits("example.com", 80)
    assert entry_parse("10.1.0.0/16").admits("10.1.2.3", 80)
    assert entry_parse("[::1]:8080") == AllowEntry("::1", 8080)
    assert entry_parse("*", star=True).covers(entry_parse("anything.org"))
    assert entry_parse("*.github.com").covers(entry_parse("api.github.com:443"))
    assert not entry_parse("api.github.com:443").covers(entry_parse("api.github.com"))
    assert entry_parse("10.0.0.0/8").covers(entry_parse("10.2.0.0/16"))
    assert not entry_parse("10.0.0.0/8").covers(entry_parse("example.com"))
    with pytest.raises(EgressRefused, match="is empty"):
        requested_check([""])
