"""The job engine against real ``manage.py worker`` processes.

A job created through the API is run by a worker subprocess that shares the test
database: full lifecycle, TTL expiry and cancel of a running handler (its subprocess
group killed), a worker killed with SIGKILL mid-job (a peer's janitor ends the job, and
running it again is a no-op), and a group-wide SIGTERM. Tests commit for real
(``transaction=True``) so the worker sees their rows.

On SQLite the test database must be a file the worker can open: pytest-django's
default is in memory. It is set below, at import, before the database is created (the
whole session then uses that file; nothing else changes). On PostgreSQL the worker
connects to the test database by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import AuditEvent
from jobs.models import Job, JobEvent
from jobs.runner import run_job
from tests import (
    REPO_ROOT,
    job_handlers,  # noqa: F401  (the test job types, known here too)
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = REPO_ROOT
DB_VARIABLES = ("DATABASE_URL", "MATRIXCLOUD_DATABASE_URL", "MATRIX_RUNTIME_DB_URL")
T = TypeVar("T")


def _file_backed_sqlite_test_db() -> None:
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and not database.get("TEST", {}).get("NAME"):
        test_name = Path(settings.MATRIX_DATA_DIR) / "test-db.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(test_name)


_file_backed_sqlite_test_db()


# --- helpers -----------------------------------------------------------------------------
def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def worker_env() -> dict[str, str]:
    """The test process's environment, pointed at the test database."""
    env = {key: value for key, value in os.environ.items() if key not in DB_VARIABLES}
    env["MATRIX_RUNTIME_EXTRA_JOB_MODULES"] = "tests.job_handlers"
    # One job at a time with two runner threads: a second job finds no free slot.
    env["MATRIX_RUNTIME_MAX_CONCURRENT_JOBS"] = "1"
    env["MATRIX_RUNTIME_WORKERS"] = "2"
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["MATRIX_RUNTIME_DB_PATH"] = db["NAME"]
    else:
        auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return env


@dataclass
class Worker:
    """One ``manage.py worker`` in its own session (its pid is its process group)."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self, timeout: float = 30) -> Worker:
        wait_for(lambda: "running." in self.output(), timeout, "the worker to run", 0.1)
        return self

    def owns(self, pid: int) -> bool:
        return alive(pid) and os.getsid(pid) == self.proc.pid

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
        self.signal_group(signal.SIGKILL)  # whatever it left behind
        self.proc.wait(timeout=10)


def start_worker(log: Path) -> Worker:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=REPO,
            env=worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(proc, log)


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the module (its start costs 2 to 4 s)."""
    running = start_worker(tmp_path_factory.mktemp("worker") / "worker.log").ready()
    yield running
    running.stop()


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test saw a handler spawn; any still alive are killed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def create(api: Any, job_type: str, payload: dict[str, Any], ttl: int = 0) -> str:
    response = api.post("/v1/jobs", {"type": job_type, "payload": payload, "ttl_seconds": ttl})
    assert response.status_code == 202, response.content
    return str(response.json()["job_id"])


def job(job_id: str) -> Job:
    return Job.objects.get(pk=job_id)


def terminal(job_id: str, timeout: float) -> Job:
    return wait_for(lambda: (found := job(job_id)).is_terminal and found, timeout, "the end")


def events(job_id: str) -> list[JobEvent]:
    return list(JobEvent.objects.filter(job_id=job_id).order_by("seq"))


def spawned_pid(job_id: str, timeout: float = 10) -> int:
    def find() -> int:
        event = JobEvent.objects.filter(job_id=job_id, step="spawn").first()
        return int(event.data["pid"]) if event and event.data else 0

    return wait_for(find, timeout, "the handler's subprocess")


# --- lifecycle ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("job_type", "payload", "status", "steps", "error"),
    [
        ("test.echo", {"message": "hi"}, "complete", ["echo", "complete"], ""),
        ("test.fail", {"reason": "no disk"}, "error", ["error"], "no disk"),
        ("test.crash", {}, "error", ["traceback", "error"], "internal error: ZeroDivisionError"),
    ],
)
def test_a_job_runs_to_one_terminal_status(
    worker: Worker, api: Any, job_type: str, payload: Any, status: str, steps: Any, error: str
) -> None:
    job_id = create(api, job_type, payload)
    ended = terminal(job_id, 15)
    assert ended.status == status
    assert error in ended.error
    assert ended.result == ({"message": "hi", "count": 1} if status == "complete" else None)
    assert ended.runner.startswith("worker:")
    assert ended.attempts == 1
    assert ended.created_at <= ended.started_at <= ended.finished_at
    seen = events(job_id)
    assert [event.step for event in seen] == ["queue", "start", *steps]
    assert [event.seq for event in seen] == list(range(1, len(seen) + 1))
    assert [event.terminal for event in seen] == [False] * (len(seen) - 1) + [True]
    assert all(event.message for event in seen)
    body = api.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == status
    assert body["result"] == ended.result


def test_a_finished_job_delivered_again_changes_nothing(worker: Worker, api: Any) -> None:
    job_id = create(api, "test.echo", {"message": "once"})
    before = terminal(job_id, 15)
    for _ in range(2):  # a run asked for again (as a claim loop racing another would)
        run_job(job_id)
    after = job(job_id)
    fields = ("status", "result", "attempts", "started_at", "finished_at", "last_seq", "runner")
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    assert len(events(job_id)) == before.last_seq == 4


def test_a_job_without_a_free_slot_waits_queued_then_runs(worker: Worker, api: Any) -> None:
    """The worker allows one job at a time: the second one finds no free slot, so it
    stays queued (not failed, not dropped) past the claim loop's idle polls, and the
    first one's finish starts it."""
    first = create(api, "test.sleep", {"seconds": 2.5})
    wait_for(lambda: job(first).status == "running", 10, "the first job to run")
    second = create(api, "test.echo", {"message": "next"})
    time.sleep(1.5)  # past a wake and an idle poll of the claim loop
    assert (job(first).status, job(second).status) == ("running", "queued")
    done, then = terminal(first, 10), terminal(second, 10)
    assert (done.status, then.status) == ("complete", "complete")
    assert then.started_at >= done.finished_at
    assert (then.started_at - done.finished_at).total_seconds() < 0.5  # woken by the finish
    assert then.attempts == 1


# --- TTL and cancel ------------------------------------------------------------------------
def test_ttl_expiry_ends_a_running_handler_and_kills_its_subprocess(
    worker: Worker, api: Any, spawned: list[int]
) -> None:
    job_id = create(api, "test.sleep", {"seconds": 60, "spawn": True}, ttl=2)
    spawned.append(pid := spawned_pid(job_id))
    assert alive(pid)
    ended = terminal(job_id, 6)
    assert ended.status == "expired"
    assert 2 <= (ended.finished_at - ended.created_at).total_seconds() < 3.5
    assert not alive(pid)
    last = events(job_id)[-1]
    assert (last.step, last.status, last.message) == (
        "expire",
        "expired",
        "Job expired after 2 seconds",
    )


def test_cancel_of_a_running_handler_answers_cancelled_within_a_second(
    worker: Worker, api: Any, spawned: list[int]
) -> None:
    job_id = create(api, "test.sleep", {"seconds": 60, "ticks": 60, "spawn": True})
    spawned.append(pid := spawned_pid(job_id))
    assert job(job_id).status == "running"
    assert alive(pid)
    started = time.monotonic()
    response = api.delete(f"/v1/jobs/{job_id}")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == {"ok": True, "status": "cancelled"}
    assert elapsed < 1.5
    ended = job(job_id)
    assert ended.cancel_requested_at is not None
    assert ended.finished_at is not None
    assert (ended.finished_at - ended.cancel_requested_at).total_seconds() < 1.0
    assert not alive(pid), "the handler's subprocess group outlived the cancel"
    last = events(job_id)[-1]
    assert (last.step, last.status, last.message) == ("cancel", "cancelled", "Job cancelled")
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"  # the record stays
    assert AuditEvent.objects.filter(action="job.cancelled", target=job_id).count() == 1
    assert api.delete(f"/v1/jobs/{job_id}").json() == {"ok": True, "status": "cancelled"}


# --- stopping and crashing workers -----------------------------------------------------------
def test_a_sigterm_to_the_whole_process_group_stops_the_worker(tmp_path: Path) -> None:
    """A service manager signals every process at once (systemd's default): the worker,
    one process, stops gracefully and exits 0."""
    group = start_worker(tmp_path / "worker.log").ready()
    try:
        group.signal_group(signal.SIGTERM)
        assert group.proc.wait(timeout=15) == 0
    finally:
        group.stop()


def test_a_sigkilled_workers_job_is_ended_by_a_peer_and_never_rerun(
    worker: Worker, api: Any, spawned: list[int], tmp_path: Path
) -> None:
    """Kill whichever worker runs the job, process group and all; the other one's janitor
    ends the job with an error that says why, and running it again is a no-op."""
    peer = start_worker(tmp_path / "peer.log").ready()
    try:
        job_id = create(api, "test.sleep", {"seconds": 120, "ticks": 100, "spawn": True})
        spawned.append(spawned_pid(job_id))
        runner_pid = int(job(job_id).runner.rpartition(":")[2])
        victim = next(w for w in (worker, peer) if w.proc.pid == runner_pid)
        victim.signal_group(signal.SIGKILL)
        killed = time.monotonic()
        ended = terminal(job_id, 60)
        assert time.monotonic() - killed < 60
        assert ended.status == "error"
        assert f"({ended.runner}) stopped heart-beating" in ended.error
        assert events(job_id)[-1].message == ended.error
        run_job(job_id)
        assert job(job_id).status == "error"
        assert job(job_id).attempts == 1
    finally:
        peer.stop()
