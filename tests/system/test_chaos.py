"""Chaos: under steady load, SIGKILL each role in turn and restart it.

A private deployment (2 web behind the round-robin proxy, 1 worker, 1 sandbox host) on
its own database and its own bus: a private Redis (``redis-server`` on a free loopback
port, no persistence) and, on the PostgreSQL stack, a private PostgreSQL cluster
(``initdb`` in a temp dir, run as the ``postgres`` user on a free port), so the bus
and the database can be killed without touching anything shared. Load runs all along:
clients create small jobs (tests/job_handlers.py) and call the tiny server's ``echo``.

Each fault: a witness job (ticking events) is streamed through the proxy; once it has
sent a few events the role is killed (SIGKILL to its process group; the database is
stopped with ``pg_ctl -m immediate``, a crash), kept down for a moment, and started
again. Then: the service is back (a probe that needs the role succeeds; the time from
restart is printed and recorded in docs/DEPLOY.md, asserted only against a generous
bound), the witness reaches a terminal state and its stream replays every event seen
before the kill (from the start and after ``Last-Event-ID``), and no process of the
deployment is left without its role (an orphan). At the end every job created under
load is terminal and nothing of the deployment is left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from matrixcloud.lib.bus import free_port
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from tests.deployment import (
    REPO,
    ROLE_SETTINGS,
    TOKEN,
    Api,
    Deployment,
    RoleProcess,
    bounded,
    describe,
)
from tests.sandbox_processes import HOST_SETTINGS, python_server
from tests.sse_client import Stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SESSIONS = "/v1/sandbox/sessions"
TINY = python_server("tiny_server.py")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOWN_SECONDS = 2.0
RECOVERY_BOUND = 60.0  # generous: the 10 s target is measured and written down, not asserted
# Longer than a host's sessions go unanswered without heartbeats (8 s) and than the
# janitor waits before ending them (20 s).
SURVIVAL_SECONDS = 30.0
DROPPED = ("DATABASE_URL", "MATRIXCLOUD_DATABASE_URL", "MATRIX_RUNTIME_DB_URL", "REDIS_URL")
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
# runuser lives in /usr/sbin, which a minimal PATH (a CI runner's env -i) may leave out.
RUNUSER = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")


# --- private bus and database --------------------------------------------------------------
class PrivateRedis:
    """``redis-server`` on a free loopback port, no persistence (a crash loses all)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        bounded(self._pings, 10, "the private redis")

    def _pings(self) -> bool:
        import redis

        with contextlib.suppress(redis.RedisError):
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temp dir, run as ``postgres`` on a free port."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.bin = PG_BIN
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mxc-chaos-pg-"))
        self.dir.chmod(0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/chaos"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        assert RUNUSER is not None
        command = [RUNUSER, "-u", "postgres", "--", str(self.bin / argv[0]), *argv[1:]]
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "chaos")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start"
        )

    def connections(self) -> int:
        """Client connections to the database now, this one left out."""
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = 'chaos'"
            ).fetchone()
        return int(row[0]) if row else 0

    def crash(self) -> None:
        """Stop at once, without a checkpoint: every connection dies, as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Stack:
    env: dict[str, str]
    bus: PrivateRedis
    database: PrivatePostgres | None


@pytest.fixture(params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("the chaos test runs sandbox servers under bubblewrap, unavailable here")
    if shutil.which("redis-server") is None:
        pytest.skip("the chaos test kills a private bus: redis-server is not installed")
    # The stack is private (its own bus and database), so each of the suite's two passes
    # runs only its own stack's chaos: the same run twice would only cost minutes.
    if request.param != connection.vendor:
        pytest.skip(f"the {request.param} pass of the suite runs this stack")
    if request.param == "postgresql" and (PG_BIN is None or RUNUSER is None):
        pytest.skip("the database restart needs a private cluster: initdb/runuser not found")
    if request.param == "postgresql" and os.geteuid() != 0:
        pytest.skip("the private PostgreSQL cluster runs as the postgres user: needs root")
    data = tmp_path / "data"
    data.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in DROPPED}
    env.update({**HOST_SETTINGS, **ROLE_SETTINGS})
    env.update(MATRIX_RUNTIME_DATA_DIR=str(data), MATRIX_RUNTIME_BUS_PREFIX="chaos")
    bus, database = PrivateRedis(), None
    try:
        bus.start()
        env["REDIS_URL"] = bus.url
        if request.param == "postgresql":
            database = PrivatePostgres()
            database.create()
            env["DATABASE_URL"] = database.url
        else:
            env["MATRIX_RUNTIME_DB_PATH"] = str(data / "chaos.sqlite3")
        migrate = [sys.executable, "manage.py", "migrate", "--verbosity", "0"]
        done = subprocess.run(migrate, cwd=REPO, env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        yield Stack(env, bus, database)
    finally:
        bus.close()
        if database is not None:
            database.close()


# --- load ------------------------------------------------------------------------------------
@dataclass
class Load:
    """Clients creating jobs and calling a tool through the proxy until stopped."""

    api: Api
    jobs: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    session: str = ""
    phase: str = "steady"

    def start(self) -> Load:
        for target in (self._jobs, self._jobs, self._calls):
            thread = threading.Thread(target=self._guard(target), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=40)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while not self.stop.is_set():
                try:
                    target()
                except (OSError, ValueError, KeyError, TypeError):
                    self.outcomes[f"{self.phase}: connection error"] += 1
                    self.stop.wait(0.2)

        return run

    def _jobs(self) -> None:
        body = {"type": "test.echo", "payload": {"message": "load"}}
        status, reply = self.api.post("/v1/jobs", body, timeout=15)
        self.outcomes[f"{self.phase}: job {status}"] += 1
        if status == 202:
            self.jobs.append(reply["job_id"])
        self.stop.wait(0.3)

    def _calls(self) -> None:
        if not self.session:
            status, reply = self.api.post(SESSIONS, {"start_command": TINY}, timeout=15)
            self.outcomes[f"{self.phase}: session {status}"] += 1
            if status == 202:
                self.session = reply["session_id"]
            self.stop.wait(0.5)
            return
        body = {"name": "echo", "arguments": {"message": "load"}}
        path = f"{SESSIONS}/{self.session}/tools/call"
        status, reply = self.api.post(path, body, timeout=15)
        self.outcomes[f"{self.phase}: call {status}"] += 1
        if status == 409 and "ended" in str(reply):
            self.session = ""  # its host died: a new session
        self.stop.wait(0.2)


# --- probes ----------------------------------------------------------------------------------
def job_done(api: Api, job_id: str) -> str:
    status, body = api.get(f"/v1/jobs/{job_id}", timeout=10)
    return str(body["status"]) if status == 200 and body["status"] in TERMINAL else ""


TERMINAL = ("complete", "error", "cancelled", "expired")


def job_completes(api: Api) -> bool:
    """A new echo job completes within 15 s."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        body = {"type": "test.echo", "payload": {"message": "probe"}}
        status, reply = api.post("/v1/jobs", body, timeout=10)
        if status != 202:
            return False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if ended := job_done(api, reply["job_id"]):
                return ended == "complete"
            time.sleep(0.1)
    return False


def session_answers(api: Api, sessions: list[str], misses: list[str]) -> bool:
    """A new session gets ready within 30 s and answers ``echo``; why not, in ``misses``
    (printed with the recovery time: what kept sessions from working)."""
    began = time.monotonic()

    def miss(why: str) -> bool:
        misses.append(f"{why} ({time.monotonic() - began:.1f} s)")
        return False

    try:
        status, reply = api.post(SESSIONS, {"start_command": TINY}, timeout=10)
        if status != 202:
            return miss(f"create {status}")
        session_id = reply["session_id"]
        sessions.append(session_id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body = api.get(f"{SESSIONS}/{session_id}", timeout=10)
            if status == 200 and body["status"] not in ("queued", "running"):
                return miss(f"session {body['status']}")
            if status == 200 and body["ready"]:
                call = {"name": "echo", "arguments": {"message": "probe"}}
                status, body = api.post(f"{SESSIONS}/{session_id}/tools/call", call, timeout=10)
                error = body.get("error") if isinstance(body, dict) else body
                return status == 200 or miss(f"call {status} {error!r}")
            time.sleep(0.2)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return miss(f"{type(exc).__name__}: {exc}")
    return miss("not ready within 30 s")


class Witness:
    """A ticking job whose event stream is read through the proxy while a role dies."""

    def __init__(self, api: Api, port: int, spawn: bool = False) -> None:
        payload = {"seconds": 8, "ticks": 16, "spawn": spawn}
        status, reply = api.post("/v1/jobs", {"type": "test.sleep", "payload": payload})
        assert status == 202, reply
        self.api, self.port, self.job_id = api, port, str(reply["job_id"])
        self.seen: list[tuple[int | None, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            path = f"/v1/jobs/{self.job_id}/events"
            with Stream(self.port, path, headers=AUTH, timeout=20) as stream:
                for block in stream.blocks():
                    if block.data is not None:  # the stream closes after the terminal event
                        self.seen.append((block.id, block.data))

    def has_seen(self, count: int) -> bool:
        return len(self.seen) >= count

    def replay(self, port: int, last_event_id: int | None = None) -> list[tuple[int | None, Any]]:
        """The whole stream from one web process (all of it or after ``last_event_id``)."""
        headers = dict(AUTH)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        found = []
        path = f"/v1/jobs/{self.job_id}/events"
        with Stream(port, path, headers=headers, timeout=30) as stream:
            assert stream.status == 200
            for block in stream.blocks():
                if block.data is not None:
                    found.append((block.id, block.data))
        return found


# --- orphans ---------------------------------------------------------------------------------
def parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


def orphans(deployment: Deployment) -> list[int]:
    """Processes of the deployment that descend from no live role process."""
    leaders = {role.pid for role in deployment.roles.values() if role.alive()}
    lost = []
    for pid in deployment.leftovers():
        ancestor, hops = pid, 0
        while ancestor > 1 and ancestor not in leaders and hops < 64:
            ancestor, hops = parent(ancestor), hops + 1
        if ancestor not in leaders:
            lost.append(pid)
    return lost


# --- the faults ------------------------------------------------------------------------------
@dataclass
class Fault:
    name: str
    kill: Callable[[], None]
    restart: Callable[[], object]
    ready: Callable[[], bool]
    spawn: bool = False


class Both:
    """Jobs and sessions both work again; says when each of them first did."""

    def __init__(self, jobs: Callable[[], bool], sessions: Callable[[], bool]) -> None:
        self.checks = {"jobs": jobs, "sessions": sessions}
        self.began = 0.0
        self.back: dict[str, float] = {}

    def __call__(self) -> bool:
        self.began = self.began or time.monotonic()
        for name, check in self.checks.items():
            if name not in self.back and check():
                self.back[name] = time.monotonic() - self.began
        return len(self.back) == len(self.checks)

    def __str__(self) -> str:
        return ", ".join(f"{name} after {took:.1f} s" for name, took in self.back.items())


def revive(deployment: Deployment) -> list[str]:
    """Start again any role that died as a side effect (what systemd or serve does)."""
    revived = []
    for role in deployment.roles.values():
        if role.proc is not None and role.proc.poll() is not None:
            role.start()
            revived.append(role.name)
    return revived


def role_fault(deployment: Deployment, role: RoleProcess, probe: Callable[[], bool]) -> Fault:
    def ready() -> bool:
        with contextlib.suppress(AssertionError):
            return role.is_ready() and probe()
        return False

    return Fault(role.name, role.kill, role.start, ready)


def test_every_role_killed_in_turn_under_load(stack: Stack, tmp_path: Path) -> None:
    deployment = Deployment(env=stack.env, logs=tmp_path, webs=2, workers=1, hosts=1)
    load: Load | None = None
    sessions: list[str] = []
    misses: list[str] = []  # failed session probes of the current fault
    measured: dict[str, float] = {}
    try:
        deployment.start()
        lb = deployment.api()
        assert deployment.proxy is not None
        load = Load(lb).start()
        if stack.database is not None:  # docs/DEPLOY.md sizes max_connections with this
            time.sleep(5)
            print(f"\nPostgreSQL connections under load: {stack.database.connections()}")
        web, worker, host = (deployment.roles[n] for n in ("web-1", "worker-1", "host-1"))
        session_probe = partial(session_answers, lb, sessions, misses)
        faults = [
            role_fault(deployment, web, lambda: job_completes(deployment.api("web-1"))),
            role_fault(deployment, worker, lambda: job_completes(lb)),
            role_fault(deployment, host, session_probe),
            Fault(
                "bus",
                stack.bus.kill,
                stack.bus.start,
                Both(partial(job_completes, lb), session_probe),
            ),
        ]
        faults[1].spawn = True  # the handler's own subprocess must not outlive its worker
        if stack.database is not None:
            database = stack.database
            faults.append(
                Fault(
                    "database",
                    database.crash,
                    database.start,
                    Both(partial(job_completes, lb), session_probe),
                )
            )
        only = os.environ.get("MATRIX_CHAOS_ONLY")  # reproduce one fault: its name
        for fault in [f for f in faults if not only or f.name == only]:
            bounded(lambda: job_completes(lb), 60, f"service before killing {fault.name}")
            witness = Witness(lb, deployment.proxy.port, spawn=fault.spawn)
            bounded(partial(witness.has_seen, 4), 30, f"the witness before {fault.name}")
            before = list(witness.seen)
            load.phase = fault.name
            misses.clear()
            fault.kill()
            time.sleep(DOWN_SECONDS)
            restarted = time.monotonic()
            fault.restart()
            collateral: list[str] = []

            def recovered(fault: Fault = fault, collateral: list[str] = collateral) -> bool:
                collateral.extend(revive(deployment))  # what died with it comes back too
                return fault.ready()

            bounded(recovered, RECOVERY_BOUND, f"service after restarting {fault.name}", 0.05)
            measured[fault.name] = time.monotonic() - restarted
            print(f"\n{fault.name}: service back {measured[fault.name]:.1f} s after its restart")
            if isinstance(fault.ready, Both):
                print(f"  {fault.ready}")
            if collateral:
                print(f"  also restarted (died with it): {collateral}")
            if misses:
                print(f"  session probes that failed first: {misses}")

            bounded(partial(job_done, lb, witness.job_id), 90, f"the {fault.name} witness end")
            _, job = lb.get(f"/v1/jobs/{witness.job_id}")
            last_seen = before[-1][0]
            assert last_seen is not None
            for web_role in deployment.named("web-"):  # every replica replays it all
                replay = witness.replay(web_role.port)
                assert replay[: len(before)] == before, (fault.name, web_role.name, replay)
                assert [event_id for event_id, _ in replay] == list(range(1, len(replay) + 1))
                assert replay[-1][1]["status"] == job["status"], (fault.name, replay[-1], job)
                assert witness.replay(web_role.port, last_seen) == replay[last_seen:]
            load.phase = f"after {fault.name}"
            print(f"  witness {job['status']}: {len(before)} events seen before the kill, replayed")
            with contextlib.suppress(AssertionError):
                bounded(lambda: not orphans(deployment), 15, "no orphans", 0.2)
            assert not orphans(deployment), (fault.name, describe(orphans(deployment)))

        load.close()
        left = [job_id for job_id in load.jobs if not job_done(lb, job_id)]
        bounded(
            lambda: not [job_id for job_id in left if not job_done(lb, job_id)],
            120,
            "every job created under load to end",
            1.0,
        )
        outcome = Counter(job_done(lb, job_id) for job_id in load.jobs)
        print(f"load: {dict(load.outcomes)}; {len(load.jobs)} jobs ended {dict(outcome)}")
        assert outcome["complete"] > 0
        # Losing a process, the bus or the database is no internal error (a job whose
        # queueing failed is accepted all the same: the janitor queues it again; a call
        # the bus cannot carry is a 503, and so is any request without its database).
        failed = [k for k in load.outcomes if k.endswith(" 500")]
        assert not failed, {k: load.outcomes[k] for k in failed}
        for session_id in sessions + ([load.session] if load.session else []):
            lb.delete(f"{SESSIONS}/{session_id}")
    except BaseException:
        for role in deployment.roles.values():  # what each role said, for the failure
            print(f"--- {role.name} (last 4000 characters) ---\n{role.output()[-4000:]}")
        raise
    finally:
        if load is not None:
            load.close()
        stray = deployment.close()
        print(
            f"recovery after restart (s): {', '.join(f'{k} {v:.1f}' for k, v in measured.items())}"
        )
    assert not stray, f"processes outlived their roles' stop: {stray}"
    assert not describe(deployment.leftovers())


def test_live_sessions_outlive_a_database_restart(stack: Stack, tmp_path: Path) -> None:
    """A database restart does not end the sandboxes that were serving: once it is back,
    their host heart-beats them again and every call answers, for longer than the
    janitor would wait. (A failed round of the host's session watch used to end the
    watch for good: 8 s later calls were refused, "the sandbox host stopped answering",
    and at 20 s the janitor ended every session of the host.)"""
    if stack.database is None:
        pytest.skip("SQLite is a file: there is no database server to restart")
    database = stack.database
    deployment = Deployment(env=stack.env, logs=tmp_path, webs=1, workers=1, hosts=1)
    try:
        api = deployment.start().api()
        status, reply = api.post(SESSIONS, {"start_command": TINY}, timeout=10)
        assert status == 202, reply
        session_id = reply["session_id"]
        path = f"{SESSIONS}/{session_id}/tools/call"
        call = {"name": "echo", "arguments": {"message": "still there"}}
        bounded(lambda: api.post(path, call, timeout=10)[0] == 200, 60, "the session to answer")
        database.crash()
        time.sleep(DOWN_SECONDS)
        database.start()
        bounded(lambda: api.post(path, call, timeout=10)[0] == 200, RECOVERY_BOUND, "a call")
        refused: Counter[str] = Counter()
        until = time.monotonic() + SURVIVAL_SECONDS
        while time.monotonic() < until:
            status, body = api.post(path, call, timeout=10)
            if status != 200:
                refused[f"{status} {body.get('error') if isinstance(body, dict) else body}"] += 1
            time.sleep(0.5)
        assert not refused, refused
        status, session = api.get(f"{SESSIONS}/{session_id}", timeout=10)
        assert (status, session["status"]) == (200, "running"), session
    except BaseException:
        for role in deployment.roles.values():
            print(f"--- {role.name} (last 4000 characters) ---\n{role.output()[-4000:]}")
        raise
    finally:
        stray = deployment.close()
    assert not stray, f"processes outlived their roles' stop: {stray}"
