"""MatrixShell exec over real HTTP: daphne serving through the web lane with ONE thread.

A command is awaited on the event loop (a deferred response), so a long one holds no
lane thread: with a single thread, another request is answered while the command still
runs, and the command's answer, audit record and usage row still arrive. The venv is
installed in this process by a real ``matrixshell.install`` job into the local
workspace (the anonymous local-dev caller's), on the database the server shares.

Both processes give each workspace's dir a quota of 64 MiB
(``MATRIX_RUNTIME_MATRIXSHELL_DISK_MB``): a command the server runs that writes past
it fails with the clear error, and the server's status shows the use and the limit.

A client that disconnects while its command runs stops it: the command's whole process
tree is gone within :data:`STOP_BOUND` seconds, and the audit record says why.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from accounts.choices import AuditStatus
from accounts.models import AuditEvent, UsageEvent
from accounts.services import local_workspace
from jobs.models import Job
from jobs.runner import run_job
from matrixcloud.lib.processes import process_gone
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from tests.jobs.test_sse import Server, shared_db, start_daphne
from tests.sandbox.test_matrixshell import (
    MIB,
    QUOTA_MB,
    require_quota,
    unmount_shells,
    write_package,
)

__all__ = ["shared_db"]  # the fixture, imported for this module's tests

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BOUND = 30
# Seconds from a client's disconnect to its command's last process gone: the lane sees
# the disconnect at once, the run polls for it every 0.1 s and gives the tree 0.5 s to
# end before it is killed; the rest is room for a busy machine.
STOP_BOUND = 5.0


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The data dir and spec both this process and the server use."""
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("MatrixShell runs under bubblewrap, which is unavailable here")
    root = tmp_path_factory.mktemp("shell-http")
    (root / "data").mkdir()
    env = {
        "MATRIX_RUNTIME_DATA_DIR": str(root / "data"),
        "MATRIX_RUNTIME_MATRIXSHELL_ENABLED": "1",
        "MATRIX_RUNTIME_MATRIXSHELL_SPEC": str(write_package(root)),
        "MATRIX_RUNTIME_MATRIXSHELL_DISK_MB": str(QUOTA_MB),
    }
    try:
        with override_settings(
            MATRIX_DATA_DIR=Path(env["MATRIX_RUNTIME_DATA_DIR"]),
            MATRIX_MATRIXSHELL_ENABLED=True,
            MATRIX_MATRIXSHELL_SPEC=env["MATRIX_RUNTIME_MATRIXSHELL_SPEC"],
            MATRIX_MATRIXSHELL_DISK_MB=QUOTA_MB,
        ):
            yield env
    finally:
        unmount_shells(root / "data")


@pytest.fixture(scope="module")
def server(shared_db: dict[str, str], shell: dict[str, str]) -> Iterator[Server]:
    env = {**shared_db, **shell, "MATRIX_RUNTIME_MODE": "local-dev"}
    served = start_daphne({**env, "MATRIX_RUNTIME_WEB_THREADS": "1"})
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


def request(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def install(api: Any) -> str:
    """A real install job into the local workspace, run in this process; its id."""
    job_id: str = api.post("/v1/matrixshell/install").json()["job_id"]
    run_job(job_id)
    assert Job.objects.get(pk=job_id).status == "complete", Job.objects.get(pk=job_id).error
    return job_id


def test_a_long_command_holds_no_lane_thread(server: Server, api: Any) -> None:
    job_id = install(api)

    answers: dict[str, Any] = {}
    slow_started = threading.Event()

    def slow() -> None:
        slow_started.set()
        command = {"command": "sleep 3; echo slow done"}
        answers["exec"] = request(server, "POST", "/v1/matrixshell/exec", command)

    runner = threading.Thread(target=slow)
    runner.start()
    slow_started.wait(BOUND)
    deadline = time.monotonic() + BOUND
    while not _exec_in_flight(server):
        assert time.monotonic() < deadline, "the server never started the command"
        time.sleep(0.02)
    status, body = request(server, "GET", "/v1/jobs")
    still_running = runner.is_alive()
    runner.join(BOUND)
    assert status == 200
    assert [job["job_id"] for job in body["jobs"]] == [job_id]
    assert still_running, "the plain request waited for the command: a lane thread was held"

    status, answer = answers["exec"]
    assert status == 200, answer
    assert (answer["exit_code"], answer["stdout"], answer["timed_out"]) == (0, "slow done\n", False)
    audit = AuditEvent.objects.get(action="matrixshell.exec")
    assert (audit.target, audit.meta["exit_code"], audit.actor) == (
        "sleep 3; echo slow done",
        0,
        "local-dev",  # the anonymous local-dev caller, named as itself (not the operator)
    )
    assert (
        UsageEvent.objects.filter(kind="matrixshell.exec", workspace=local_workspace()).count() == 1
    )


def test_a_write_past_the_quota_fails_clearly_and_status_shows_it(server: Server, api: Any) -> None:
    require_quota()
    install(api)
    limit = QUOTA_MB * MIB
    status, before = request(server, "GET", "/v1/matrixshell/status")
    assert status == 200, before
    assert (before["installed"], before["disk_quota"]) == (True, "loop-ext4")
    assert before["disk_limit_bytes"] == limit
    assert 20 * MIB < before["disk_used_bytes"] < limit

    fill = "for i in 1 2 3 4 5 6; do head -c 16777216 /dev/zero > fill$i || exit 7; done"
    status, body = request(server, "POST", "/v1/matrixshell/exec", {"command": fill})
    assert status == 200, body
    assert (body["exit_code"], body["disk_full"]) == (7, True)
    assert "No space left on device" in body["stderr"]
    assert (
        f"bytes used; the quota is {QUOTA_MB} MiB, set by MATRIX_RUNTIME_MATRIXSHELL_DISK_MB): "
        "delete files to make room, or ask the operator to raise it"
    ) in body["stderr"]
    sandbox = Path(before["sandbox"])
    du = subprocess.run(
        ["du", "-s", "-B1", str(sandbox)], capture_output=True, text=True, check=True, timeout=30
    )
    assert 48 * MIB < int(du.stdout.split()[0]) <= limit  # filled, and no further
    status, full = request(server, "GET", "/v1/matrixshell/status")
    assert limit - MIB < full["disk_used_bytes"] <= full["disk_limit_bytes"] == limit

    again = {"command": "rm fill*; echo fits > small.txt && cat small.txt"}
    status, later = request(server, "POST", "/v1/matrixshell/exec", again)
    assert (status, later["exit_code"], later["stdout"], later["disk_full"]) == (
        200,
        0,
        "fits\n",
        False,
    )


def test_a_command_stops_when_its_client_goes_away(server: Server, api: Any) -> None:
    install(api)
    command = "sleep 300 & sleep 301; echo never"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
    conn.request(
        "POST",
        "/v1/matrixshell/exec",
        json.dumps({"command": command}),
        {"Content-Type": "application/json"},
    )
    deadline = time.monotonic() + BOUND
    while not {"300", "301"} <= _sleeps(_descendants(server.proc.pid)):
        assert time.monotonic() < deadline, "the server never started the command"
        time.sleep(0.05)
    tree = _descendants(server.proc.pid)
    assert len(tree) >= 3  # bwrap, bash, both sleeps (and what bwrap puts between)

    assert conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-command
    conn.close()
    gone_by = time.monotonic() + STOP_BOUND
    while not all(process_gone(pid) for pid in tree):
        left = [pid for pid in tree if not process_gone(pid)]
        assert time.monotonic() < gone_by, f"still running {STOP_BOUND} s after: {left}"
        time.sleep(0.05)
    assert not _descendants(server.proc.pid)

    audit = wait_for_row(lambda: AuditEvent.objects.filter(action="matrixshell.exec").first())
    assert (audit.target, audit.status) == (command, AuditStatus.FAILURE)
    assert (audit.meta["stopped"], audit.meta["reason"], audit.meta["exit_code"]) == (
        True,
        "client_gone",
        -1,
    )
    assert audit.meta["duration_ms"] < (BOUND + STOP_BOUND) * 1000
    # The server is fine and answers the next command.
    status, body = request(server, "POST", "/v1/matrixshell/exec", {"command": "echo next"})
    assert (status, body["exit_code"], body["stdout"]) == (200, 0, "next\n")


def wait_for_row(read: Any) -> Any:
    deadline = time.monotonic() + BOUND
    while (row := read()) is None:
        assert time.monotonic() < deadline, "no audit record of the stopped command"
        time.sleep(0.05)
    return row


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (all its threads' children, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with contextlib.suppress(OSError):
                    children = {int(c) for c in (task / "children").read_text().split()}
                    todo.extend(children - found)
                    found |= children
    return found


def _sleeps(pids: set[int]) -> set[str]:
    """The arguments of the ``sleep`` processes among ``pids``."""
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"sleep") and len(argv) > 1:
                found.add(argv[1].decode())
    return found


def _exec_in_flight(server: Server) -> bool:
    """Whether the server has started the command (a bwrap child of daphne runs it)."""
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "children").read_text().split():
                return True
    return False
