"""``serve`` and its roles as real processes: start, heartbeats, RPC, restart, clean stop.

Also the supervisor on its own with tiny Python children (crash loop, stubborn child,
stragglers), which is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from channels_redis.core import RedisChannelLayer

from matrixcloud.lib.supervisor import CrashLoop, RestartPolicy, Role, Supervisor
from sandbox.enforcement import install_command
from sandbox.host import START_CHANNEL
from tests import REPO_ROOT
from tests.sandbox.test_enforcement import path_without

REPO = REPO_ROOT
T = TypeVar("T")
HEALTH_BOUND = 30.0
STOP_BOUND = 30.0
ANY_ADDRESS = "0.0.0.0"  # noqa: S104  (never bound: serve must refuse it)
# Environment a child must not inherit from this test session (or the developer's shell).
DROPPED = (
    "REDIS_URL", "MATRIX_TEST_EMBEDDED_BUS", "MATRIX_RUNTIME_API_TOKEN",
    "MATRIX_RUNTIME_API_TOKEN_FILE", "DATABASE_URL", "MATRIXCLOUD_DATABASE_URL",
    "MATRIX_RUNTIME_DB_URL", "MATRIX_RUNTIME_DB_PATH", "MATRIX_RUNTIME_PORT", "PORT",
    "MATRIX_RUNTIME_HOST", "MATRIX_RUNTIME_BUS_PREFIX",
)  # fmt: skip


# --- helpers ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in DROPPED}
    env.update(
        DJANGO_SETTINGS_MODULE="matrixcloud.settings",
        MATRIX_RUNTIME_DATA_DIR=str(data_dir),
        MATRIX_RUNTIME_MODE="local-dev",
        MATRIX_RUNTIME_HEARTBEAT_SECONDS="0.5",
        MATRIX_RUNTIME_WORKERS="2",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout} s")


def proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, ppid, start time) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), fields[19]


def gone(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is None or stat[0] == "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_tree(root: int) -> dict[tuple[int, str], str]:
    """Every live descendant of ``root``: (pid, start time) -> command line."""
    parents: dict[int, int] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat and stat[0] != "Z":
            parents[int(entry.name)], starts[int(entry.name)] = stat[1], stat[2]
    tree, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                tree[(pid, starts[pid])] = cmdline(pid)
                frontier.append(pid)
    return tree


def with_worker(root: int) -> dict[tuple[int, str], str] | None:
    """The process tree under ``root`` once it holds the worker."""
    tree = process_tree(root)
    return tree if any(cmd.endswith(" worker ") for cmd in tree.values()) else None


def still_running(procs: dict[tuple[int, str], str]) -> list[str]:
    alive = []
    for pid, start in procs:
        stat = proc_stat(pid)
        if stat and stat[0] != "Z" and stat[2] == start:
            alive.append(f"{pid} {procs[(pid, start)]}")
    return alive


def heartbeats(data_dir: Path) -> list[dict[str, Any]]:
    uri = f"file:{data_dir / 'matrixcloud.sqlite3'}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True, timeout=5) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT role, pid, stopped_at, meta FROM runtimes_processheartbeat")
            return [dict(row) for row in rows]
    except sqlite3.Error:
        return []


def live_pid(data_dir: Path, role: str, *, besides: int = 0) -> int | None:
    for row in heartbeats(data_dir):
        if row["role"] == role and row["pid"] != besides and row["stopped_at"] is None:
            return int(row["pid"])
    return None


def health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def kill_tree(procs: dict[tuple[int, str], str]) -> None:
    for pid, _start in procs:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --- serve, end to end ---------------------------------------------------------------
@dataclass
class Served:
    """One ``serve`` run: its process, data dir, port and output file."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=REPO,
            env=child_env(data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = Served(proc, data_dir, port, log)
    yield run
    if proc.poll() is None:  # the test failed half-way: leave nothing behind
        kill_tree(process_tree(proc.pid))
        proc.kill()
    proc.wait(timeout=10)


def ask_sandbox_host(bus_url: str) -> dict[str, Any]:
    """Send a request to ``sandbox.start`` on ``bus_url`` and return the host's reply."""

    async def ask() -> dict[str, Any]:
        layer = RedisChannelLayer(hosts=[bus_url], prefix="mxc")
        try:
            reply_to = await layer.new_channel()
            request = {"type": "sandbox.start", "reply_channel": reply_to, "request_id": "r1"}
            await layer.send(START_CHANNEL, request)
            return dict(await asyncio.wait_for(layer.receive(reply_to), timeout=10))
        finally:
            await layer.close_pools()

    return asyncio.run(ask())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_runs_every_role_restarts_a_crash_and_stops_clean(served: Served) -> None:
    started = time.monotonic()
    wait_for(lambda: health(served.port), HEALTH_BOUND, "/v1/health 200")
    assert time.monotonic() - started < HEALTH_BOUND
    up_line = f"is up at http://127.0.0.1:{served.port}"
    wait_for(lambda: up_line in served.output(), 5, "the line that says it is up")
    # What sandboxes get here, one line each, before any role starts (bwrap runs here).
    said = enforcement_lines(served.output())
    assert list(said) == ["isolation", "limits", "disk quota", "network"], served.output()
    assert said["isolation"] == (
        "isolation: bubblewrap - bwrap runs with user, pid, ipc, uts and network namespaces"
    )
    assert said["network"] == (
        "network: offline - each sandbox has an empty network namespace; allow_network is "
        "refused (MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK is off)"
    )
    assert served.output().index(said["network"]) < served.output().index("embedded bus at")

    wait_for(lambda: live_pid(served.data_dir, "worker"), 30, "a worker heartbeat")
    host_pid = wait_for(lambda: live_pid(served.data_dir, "sandbox_host"), 30, "a host heartbeat")
    host_row = next(row for row in heartbeats(served.data_dir) if row["pid"] == host_pid)
    assert '"reply_channel": "specific.' in host_row["meta"]
    bus = re.search(r"embedded bus at redis://:\*\*\*@(127\.0\.0\.1:\d+)/0", served.output())
    assert bus, served.output()
    password = (served.data_dir / "bus" / "valkey.conf").read_text().split()[1]
    assert password not in served.output()
    reply = ask_sandbox_host(f"redis://:{password}@{bus.group(1)}/0")
    # A start without a job id is refused with an answer, not left to time out.
    assert reply == {
        "type": "sandbox.reply",
        "ok": False,
        "kind": "refused",
        "error": "unsupported request 'sandbox.start' (or no job_id)",
        "request_id": "r1",
    }

    # The worker is one process (a claim loop and its runner threads), with no children.
    seen = wait_for(lambda: with_worker(served.proc.pid), 30, "the worker")
    [worker_pid] = [pid for (pid, _), cmd in seen.items() if " worker" in cmd]
    assert process_tree(worker_pid) == {}
    worker_row = next(row for row in heartbeats(served.data_dir) if row["pid"] == worker_pid)
    assert json.loads(worker_row["meta"]) == {
        "runner": f"worker:{socket.gethostname()}:{worker_pid}",
        "threads": 2,
    }
    assert any("valkey-server" in cmd for cmd in seen.values())
    assert any("daphne" in cmd for cmd in seen.values())
    assert host_pid in {pid for pid, _ in seen}

    os.kill(host_pid, signal.SIGKILL)
    wait_for(lambda: live_pid(served.data_dir, "sandbox_host", besides=host_pid), 30, "restart")
    assert "sandbox_host was killed by SIGKILL; restarting" in served.output()
    seen |= process_tree(served.proc.pid)

    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(timeout=STOP_BOUND) == 0, served.output()
    assert still_running(seen) == []
    stops = dict(
        re.findall(r"serve +\| (\w+) stopped in ([\d.]+) s \(exited with code 0\)", served.output())
    )
    assert set(stops) == {"web", "sandbox_host", "worker", "bus"}, served.output()
    assert float(stops["sandbox_host"]) < 2
    live = [row for row in heartbeats(served.data_dir) if row["pid"] != host_pid]
    assert live
    assert all(row["stopped_at"] for row in live), live


def enforcement_lines(output: str) -> dict[str, str]:
    """``serve``'s enforcement lines by label (``warning:`` kept in the text)."""
    found = re.findall(
        r"^serve +\| ((?:warning: )?(isolation|limits|disk quota|network): .*)$", output, re.M
    )
    return {label: line for line, label in found}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_without_bwrap_says_unisolated_and_how_to_install_it(tmp_path: Path) -> None:
    path = path_without("bwrap", tmp_path / "bin")
    log = tmp_path / "serve.log"
    argv = [sys.executable, "manage.py", "serve", "--port", str(free_port())]
    env = child_env(tmp_path / "data", PATH=path)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        said = wait_for(
            lambda: (lines := enforcement_lines(log.read_text())) and "network" in lines and lines,
            60,
            "the enforcement lines",
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=STOP_BOUND) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    command = install_command("bubblewrap")
    assert command  # this machine's os-release names a known distribution
    assert said["isolation"] == (
        "warning: isolation: unisolated - sandboxes run without isolation: bwrap is not "
        f"installed; to fix, install bubblewrap: {command}"
    )
    assert said["limits"].startswith(
        "warning: limits: rlimits - sandboxes have per-process rlimits only, no aggregate "
        "limit: sandboxes are not under bubblewrap"
    )
    assert said["limits"].endswith(
        f"; to fix, isolate sandboxes first, install bubblewrap: {command}"
    )
    assert said["network"] == (
        "warning: network: host - sandboxes share this host's network (they are not "
        f"isolated); to fix, isolate sandboxes, install bubblewrap: {command}"
    )
    assert list(said) == ["isolation", "limits", "disk quota", "network"]


@pytest.mark.slow
def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--host", ANY_ADDRESS, "--port", str(free_port())],
        cwd=REPO,
        env=child_env(tmp_path),
        capture_output=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert b"refusing to listen on 0.0.0.0 without an API token" in result.stderr
    assert not (tmp_path / "matrixcloud.sqlite3").exists()  # nothing ran, not even migrate


# --- the worker alone ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_worker_stops_on_sigterm(tmp_path: Path) -> None:
    env = child_env(tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=60)
    worker = subprocess.Popen([*manage, "worker"], cwd=REPO, env=env, start_new_session=True)
    try:
        wait_for(lambda: live_pid(tmp_path, "worker"), 30, "a worker heartbeat")
        assert process_tree(worker.pid) == {}  # one process: no children to stop
        worker.send_signal(signal.SIGTERM)  # to the main process only, as a container stop
        assert worker.wait(timeout=20) == 0
        assert all(row["stopped_at"] for row in heartbeats(tmp_path))
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


# --- the supervisor alone -------------------------------------------------------------------
def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-u", "-c", code)


def tick_until(supervisor: Supervisor, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        supervisor.tick()
        time.sleep(0.02)


def test_a_crash_loop_gives_up() -> None:
    out = io.BytesIO()
    policy = RestartPolicy(first_delay=0.01, max_delay=0.05, max_restarts=3, window=30)
    supervisor = Supervisor(out=out, policy=policy)
    supervisor.start(Role("boom", python("raise SystemExit(3)")))
    try:
        with pytest.raises(CrashLoop, match="boom exited with code 3; it stopped 4 times"):
            tick_until(supervisor, lambda: False, 20)
    finally:
        supervisor.stop()
    assert out.getvalue().count(b"boom exited with code 3; restarting") == 3


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    out = io.BytesIO()
    supervisor = Supervisor(out=out, grace=0.5)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready')"
    supervisor.start(Role("stubborn", python(code + "; time.sleep(60)")))
    pid = supervisor.pid("stubborn")
    assert pid
    tick_until(supervisor, lambda: b"ready" in out.getvalue(), 20)

    began = time.monotonic()
    supervisor.stop()

    assert time.monotonic() - began < 5
    assert gone(pid)
    assert b"stubborn     | ready\n" in out.getvalue()
    assert b"stubborn did not stop within 0.5 s; killing it" in out.getvalue()
    assert b"stubborn stopped in" in out.getvalue()
    assert b"was killed by SIGKILL" in out.getvalue()


def test_what_an_exited_child_left_behind_is_killed() -> None:
    out = io.BytesIO()
    supervisor = Supervisor(out=out, policy=RestartPolicy(first_delay=30))
    code = "import subprocess; print(subprocess.Popen(['sleep', '60']).pid)"
    supervisor.start(Role("parent", python(code)))
    try:
        tick_until(supervisor, lambda: b"restarting in" in out.getvalue(), 20)
        orphan = int(re.findall(rb"parent\s+\| (\d+)", out.getvalue())[0])
        wait_for(lambda: gone(orphan), 5, "the orphaned grandchild gone")
    finally:
        supervisor.stop()
