"""What ``serve`` becomes after its Django work: the standard-library supervisor.

The supervisor imports no Django (and nothing else outside the standard library), gets
its plan in a descriptor (never in its argv or environment), and a real ``serve`` still
starts, answers and stops clean as that process.
"""

from __future__ import annotations

import http.server
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrixcloud.lib.bus import bus_command, bus_url, free_port, new_password, write_bus_config
from matrixcloud.lib.supervisor import Role
from matrixcloud.lib.supervisor.__main__ import api_healthy, bus_answers, run
from matrixcloud.lib.supervisor.plan import Plan, plan_from_fd, plan_to_fd
from tests.matrixcloud.test_serve import (
    REPO,
    STOP_BOUND,
    child_env,
    gone,
    health,
    process_tree,
    wait_for,
)

SUPERVISOR_PSS_KIB = 25 * 1024

MODULES = """
import sys
before = set(sys.modules)
import matrixcloud.lib.supervisor.__main__
print("\\n".join(sorted(set(sys.modules) - before)))
"""


def test_the_supervisor_imports_only_the_standard_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MODULES], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = result.stdout.split()
    ours = [name for name in loaded if name.startswith("matrixcloud")]
    others = [name for name in loaded if name not in ours]
    assert "matrixcloud.lib.supervisor.plan" in ours
    supervisor = ("matrixcloud", "matrixcloud.lib", "matrixcloud.lib.supervisor")
    # Besides its own package, the floor's two standard-library helpers it shares (the
    # process-group kill, the backoff); the check below holds them to the stdlib too.
    shared = {"matrixcloud.lib.backoff", "matrixcloud.lib.processes"}
    assert shared <= set(ours)
    rest = [name for name in ours if not name.startswith(supervisor[2]) and name not in shared]
    assert rest == list(supervisor[:2])
    foreign = [name for name in others if name.split(".")[0] not in sys.stdlib_module_names]
    assert foreign == [], foreign


def plan(**changes: object) -> Plan:
    fields: dict[str, object] = {
        "notes": ("a note",),
        "bus": Role("bus", ("valkey-server", "x.conf")),
        "bus_url": "redis://:secret@127.0.0.1:1/0",
        "bus_said": "bus up",
        "roles": (
            Role("web", ("daphne",), {"REDIS_URL": "redis://:secret@127.0.0.1:1/0"}),
            Role("worker", ("worker",), {}, stop_signal=signal.SIGINT, stop_leader_only=True),
        ),
        "url": "http://127.0.0.1:8080",
        "stop_order": ("web", "worker", "bus"),
        "bus_timeout": 3.0,
        "health_timeout": 4.0,
    }
    fields.update(changes)
    return Plan(**fields)  # type: ignore[arg-type]


def test_a_plan_crosses_a_descriptor_whole_and_the_descriptor_is_closed() -> None:
    original = plan()
    fd = plan_to_fd(original)
    assert os.get_inheritable(fd)  # it must survive the exec

    assert plan_from_fd(fd) == original
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[int, str]]:
    password = new_password()
    config = write_bus_config(tmp_path / "bus", password=password)
    port = free_port()
    proc = subprocess.Popen(
        bus_command(port=port, data_dir=tmp_path / "bus", config=config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, password
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_bus_probe_needs_the_password(bus: tuple[int, str]) -> None:
    port, password = bus
    wait_for(lambda: bus_answers(bus_url(port, password)), 10, "the bus to answer")

    assert not bus_answers(bus_url(port, "wrong"))
    assert not bus_answers(bus_url(port))
    assert not bus_answers(bus_url(free_port(), password))  # nobody listens there


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/v1/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_health_probe_wants_a_200(status: int, healthy: bool) -> None:
    handler = type("Handler", (_Status,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert api_healthy(f"http://127.0.0.1:{server.server_address[1]}") is healthy
    finally:
        server.shutdown()
        server.server_close()
    assert not api_healthy(f"http://127.0.0.1:{free_port()}")


def test_an_api_that_never_answers_fails_the_run_and_stops_its_roles() -> None:
    out = io.BytesIO()
    sleeper = Role("web", (sys.executable, "-c", "import time; time.sleep(60)"))
    url = f"http://127.0.0.1:{free_port()}"
    failing = plan(bus=None, roles=(sleeper,), url=url, health_timeout=1.0)

    failure = run(failing, out)

    assert failure == f"the API at {failing.url} did not answer within 1 s"
    said = out.getvalue().decode()
    assert said.startswith("serve        | a note\n")
    assert re.search(r"web stopped in [\d.]+ s \(was killed by SIGTERM\)", said), said
    assert "MatrixCloud is up" not in said


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_becomes_a_small_supervisor_without_secrets_in_proc(tmp_path: Path) -> None:
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=REPO, env=child_env(data_dir), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: health(port), 60, "/v1/health 200")
        wait_for(lambda: "MatrixCloud is up" in log.read_text(), 10, "the up line")
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", b"matrixcloud.lib.supervisor"]
        password = (data_dir / "bus" / "valkey.conf").read_text().split()[1].encode()
        assert password not in b" ".join(cmdline)
        assert password not in Path(f"/proc/{proc.pid}/environ").read_bytes()
        fds = [os.readlink(fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()]
        assert not [fd for fd in fds if fd.startswith("/memfd:")], fds  # the plan was closed
        rollup = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
        pss = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))  # type: ignore[union-attr]
        assert pss < SUPERVISOR_PSS_KIB, f"the supervisor holds {pss} KiB"
        tree = process_tree(proc.pid)

        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_BOUND) == 0, log.read_text()
        assert time.monotonic() - began < STOP_BOUND
        assert log.read_text().rstrip().endswith("serve        | stopped")
        wait_for(lambda: all(gone(pid) for pid, _ in tree), 5, "every role gone")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
