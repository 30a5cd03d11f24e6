"""Two installations, end to end: A (the control plane) and B (a runtime), each a real
``manage.py serve`` on its own port with its own data dir and SQLite database.

A's owner signs up and mints a join token over HTTP; B runs ``manage.py join`` against
A, appears in A's ``/v1/cloud/runtimes`` online with its capabilities and resources,
and goes offline when stopped: at once when it says so on a clean stop, and by A's
(shortened, 3 s) silence threshold when it is killed. Then B's ``serve`` finds the stored
credential and heart-beats by itself. Also: 20 concurrent registrations over HTTP with a
5-use token register exactly 5 runtimes in A's file-backed database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from matrixcloud.lib.http import Unreachable, fetch
from tests import REPO_ROOT

pytestmark = pytest.mark.slow

REPO = REPO_ROOT
T = TypeVar("T")
START_BOUND = 45.0
WAIT_BOUND = 30.0
STOP_BOUND = 30.0
OFFLINE_AFTER = 3  # A's threshold of silence, shortened so the test stays fast
# What a child must not inherit from this test session: each installation is on its own.
DROPPED = (
    "REDIS_URL", "MATRIX_TEST_EMBEDDED_BUS", "MATRIX_RUNTIME_API_TOKEN",
    "MATRIX_RUNTIME_API_TOKEN_FILE", "DATABASE_URL", "MATRIXCLOUD_DATABASE_URL",
    "MATRIX_RUNTIME_DB_URL", "MATRIX_RUNTIME_DB_PATH", "MATRIX_RUNTIME_PORT", "PORT",
    "MATRIX_RUNTIME_HOST", "MATRIX_RUNTIME_BUS_PREFIX", "MATRIX_RUNTIME_DATA_DIR",
)  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout} s")


def http(
    method: str, url: str, body: dict[str, Any] | None = None, token: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = fetch(method, url, json=body, headers=headers, timeout=10, proxy=False)
    return reply.status, reply.json


@dataclass
class Installation:
    """One MatrixCloud installation: its data dir, port, environment and processes."""

    name: str
    data_dir: Path
    port: int
    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        """Start ``manage.py <command>`` in this installation (output to a log file)."""
        log = self.logs / f"{self.name}-{command[0]}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", *command],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def serve(self) -> subprocess.Popen[bytes]:
        proc = self.start("serve", "--port", str(self.port))
        wait_for(lambda: self.healthy(proc), START_BOUND, f"{self.name} serving")
        return proc

    def healthy(self, proc: subprocess.Popen[bytes]) -> bool:
        assert proc.poll() is None, f"{self.name} exited:\n{output(proc)}"
        with contextlib.suppress(Unreachable):
            return http("GET", self.url + "/v1/health")[0] == 200
        return False


def output(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log).read_text(errors="replace")  # type: ignore[attr-defined]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal the process (SIGTERM: its own, as a container stop; SIGKILL: the group)."""
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(sig)
    return proc.wait(timeout=STOP_BOUND)


@pytest.fixture
def installations(tmp_path: Path) -> Iterator[Callable[..., Installation]]:
    made: list[Installation] = []

    def make(name: str, **extra: str) -> Installation:
        env = {key: value for key, value in os.environ.items() if key not in DROPPED}
        data_dir = tmp_path / name
        env.update(
            DJANGO_SETTINGS_MODULE="matrixcloud.settings",
            MATRIX_RUNTIME_DATA_DIR=str(data_dir),
            MATRIX_RUNTIME_MODE="local-dev",
            MATRIX_RUNTIME_HEARTBEAT_SECONDS="0.5",
            MATRIX_RUNTIME_WORKERS="2",
            PYTHONUNBUFFERED="1",
            **extra,
        )
        made.append(Installation(name, data_dir, free_port(), env, tmp_path, []))
        return made[-1]

    yield make
    for installation in made:  # whatever a failed test left running
        for proc in installation.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_BOUND)


def owner_session(control: Installation) -> str:
    code, body = http(
        "POST",
        control.url + "/v1/auth/signup",
        {"name": "Ada Control", "email": "ada@control.test", "password": "plane of control 77"},
    )
    assert code == 201, body
    return str(body["token"])


def mint(control: Installation, session: str, **body: Any) -> str:
    code, answer = http("POST", control.url + "/v1/cloud/join-tokens", body, session)
    assert code == 201, answer
    return str(answer["secret"])


def runtime_named(control: Installation, session: str, name: str) -> dict[str, Any] | None:
    code, body = http("GET", control.url + "/v1/cloud/runtimes", token=session)
    assert code == 200, body
    return next((r for r in body["runtimes"] if r["name"] == name), None)


def status_is(control: Installation, session: str, name: str, status: str) -> dict[str, Any] | None:
    runtime = runtime_named(control, session, name)
    return runtime if runtime is not None and runtime["status"] == status else None


def test_an_installation_joins_another_heart_beats_and_goes_offline(installations):
    control = installations("a", MATRIX_RUNTIME_OFFLINE_AFTER_SECONDS=str(OFFLINE_AFTER))
    # 1 s beats: all of B's calls come from 127.0.0.1, within A's 120 writes per IP a minute.
    member = installations("b", MATRIX_RUNTIME_CLOUD_HEARTBEAT_SECONDS="1")
    control_serve = control.serve()
    member_serve = member.serve()
    session = owner_session(control)
    secret = mint(control, session, label="installation b", max_uses=1, ttl_minutes=30)

    joined = member.start(
        "join", "--control-plane", control.url, "--token", secret, "--name", "installation-b"
    )
    runtime = wait_for(
        lambda: status_is(control, session, "installation-b", "online"),
        WAIT_BOUND,
        "installation b online at a",
    )
    assert runtime["kind"] == "matrixcloud"
    assert runtime["mode"] == "local-dev"
    _, capabilities = http("GET", member.url + "/v1/capabilities")
    assert "mcp.test" in runtime["caps"]
    assert runtime["caps"] == capabilities["capabilities"], "what B itself says it can do"
    assert runtime["resources"]["free_disk_bytes"] > 0
    assert runtime["resources"]["cpu_count"] >= 1
    assert isinstance(runtime["resources"]["engines"], list)
    stored = member.data_dir / "cloud-runtime.json"
    # B stores its credential once A has answered the registration, which A's list can
    # show a moment earlier (the row is committed before the answer is sent).
    wait_for(stored.exists, WAIT_BOUND, "installation b's stored credential")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    credential = json.loads(stored.read_text())
    assert credential["runtime_id"] == runtime["id"]
    assert credential["control_plane"] == control.url
    assert credential["runtime_token"] not in output(joined), "the token is never printed"
    first_seen = runtime["last_seen_at"]
    wait_for(
        lambda: (
            (runtime_named(control, session, "installation-b") or {}).get("last_seen_at")
            != first_seen
        ),
        WAIT_BOUND,
        "a later heartbeat",
    )

    # A clean stop says offline at once.
    assert stop(joined) == 0, output(joined)
    assert runtime_named(control, session, "installation-b")["status"] == "offline"
    assert "is offline" in output(joined)

    # A killed runtime says nothing: A's silence threshold makes it offline.
    beating = member.start("runtime_heartbeat")
    wait_for(
        lambda: status_is(control, session, "installation-b", "online"), WAIT_BOUND, "back online"
    )
    stop(beating, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(
        lambda: status_is(control, session, "installation-b", "offline"),
        OFFLINE_AFTER + WAIT_BOUND,
        "offline after silence",
    )
    assert time.monotonic() - killed_at >= OFFLINE_AFTER - 1.5

    # B's serve finds the stored credential and heart-beats by itself; stopping it says so.
    assert stop(member_serve) == 0, output(member_serve)
    member_serve = member.serve()
    wait_for(
        lambda: status_is(control, session, "installation-b", "online"),
        WAIT_BOUND,
        "online again under serve",
    )
    assert "cloud_heartbeat" in output(member_serve)
    assert stop(member_serve) == 0, output(member_serve)
    assert runtime_named(control, session, "installation-b")["status"] == "offline"

    # The single-use token is spent; A's one runtime is B.
    again = member.start(
        "join", "--control-plane", control.url, "--token", secret, "--force", "--no-heartbeat"
    )
    assert again.wait(timeout=STOP_BOUND) != 0
    assert "join token already used" in output(again)
    _, listing = http("GET", control.url + "/v1/cloud/runtimes", token=session)
    assert [r["id"] for r in listing["runtimes"]] == [runtime["id"]]
    assert stop(control_serve) == 0


def test_twenty_concurrent_registrations_over_http_with_a_five_use_token(installations):
    control = installations("a")
    control_serve = control.serve()
    session = owner_session(control)
    secret = mint(control, session, max_uses=5)

    def register(n: int) -> str:
        code, body = http(
            "POST",
            control.url + "/v1/cloud/runtimes/register",
            {"join_token": secret, "name": f"racer-{n}"},
        )
        return f"{code} {body.get('error', '')}".strip()

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = Counter(pool.map(register, range(20), timeout=WAIT_BOUND))

    assert outcomes == Counter({"201": 5, "401 join token already used": 15})
    _, listing = http("GET", control.url + "/v1/cloud/runtimes", token=session)
    assert len(listing["runtimes"]) == 5
    _, tokens = http("GET", control.url + "/v1/cloud/join-tokens?all=true", token=session)
    assert [(t["uses"], t["max_uses"], t["active"]) for t in tokens["join_tokens"]] == [
        (5, 5, False)
    ]
    assert stop(control_serve) == 0
