"""Real sandbox hosts for the sandbox tests, on the shared test database and bus.

A host is ``manage.py sandbox_host`` in its own session, pointed at the test database
the way ``test_jobs_worker`` points workers at it (the same file-backed SQLite test
database, set up when that module is imported), with the test fixtures bound read-only
into every sandbox so servers start by absolute path. Helpers wait on job rows and
find a session's processes by their working directory (the session's scratch dir).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import QuerySet

from jobs.choices import JobStatus
from jobs.models import Job, JobEvent
from jobs.services import job_cancel
from tests.factories import actor_of
from tests.jobs.test_jobs_worker import alive, wait_for, worker_env

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SERVERS = FIXTURES / "servers"
NPM = FIXTURES / "npm" / "node_modules" / "@modelcontextprotocol"
HOST_READY_BOUND = 30.0
# Server-side bounds of the test hosts: short enough for timeout tests to be quick.
HOST_SETTINGS = {
    "MATRIX_RUNTIME_SANDBOX_RO_BINDS": str(FIXTURES),
    "MATRIX_RUNTIME_SANDBOX_START_TIMEOUT": "15",
    "MATRIX_RUNTIME_SANDBOX_CALL_TIMEOUT": "1.5",
    "MATRIX_RUNTIME_SANDBOX_CALL_HARD_CAP": "3",
    "MATRIX_RUNTIME_HEARTBEAT_SECONDS": "1",
}

needs_npm = pytest.mark.skipif(
    shutil.which("node") is None or not NPM.is_dir(),
    reason="needs node and the npm fixtures: npm ci --prefix tests/fixtures/npm",
)


def python_server(name: str, *args: str) -> str:
    """The start command of a fixture server (``python3`` is the venv's in a sandbox)."""
    return " ".join(["python3", str(SERVERS / name), *args])


def npm_server(package: str, *args: str) -> str:
    return " ".join(["node", str(NPM / package / "dist" / "index.js"), *args])


def host_env(**overrides: str) -> dict[str, str]:
    """The environment of a test host: the test database, the fixtures, short bounds."""
    return {**worker_env(), **HOST_SETTINGS, "PYTHONUNBUFFERED": "1", **overrides}


@dataclass
class Host:
    """One ``manage.py sandbox_host`` in its own session (its pid is its group)."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> Host:
        wait_for(
            lambda: "sandbox host listening" in self.output() or self.proc.poll() is not None,
            HOST_READY_BOUND,
            "the host to listen",
            0.1,
        )
        assert self.proc.poll() is None, self.output()
        return self

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; whatever is left of the group is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=10)


def start_host(log: Path, **overrides: str) -> Host:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "sandbox_host"],
            cwd=REPO,
            env=host_env(**overrides),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Host(proc, log)


@contextlib.contextmanager
def running_host(log: Path, **overrides: str) -> Iterator[Host]:
    host = start_host(log, **overrides).ready()
    try:
        yield host
    finally:
        host.stop()


# --- waiting on rows -----------------------------------------------------------------------


def steps(job_id: str) -> list[tuple[str, str]]:
    """The job's (step, status) pairs in order, log lines left out."""
    rows = JobEvent.objects.filter(job_id=job_id).exclude(step="log").order_by("seq")
    return [(row.step, row.status) for row in rows]


def events(job_id: str) -> list[JobEvent]:
    return list(JobEvent.objects.filter(job_id=job_id).order_by("seq"))


def wait_step(job_id: str, step: str, timeout: float = 20) -> JobEvent:
    """The job's first ``step`` event, or fail (saying where the job got to)."""

    def find() -> JobEvent | None:
        found = JobEvent.objects.filter(job_id=job_id, step=step).first()
        if found is None and JobEvent.objects.filter(job_id=job_id, terminal=True).exists():
            pytest.fail(f"{job_id} ended before {step}: {steps(job_id)} {last_message(job_id)}")
        return found

    event = wait_for(find, timeout, f"{step} of {job_id}")
    assert event is not None
    return event


def last_message(job_id: str) -> str:
    last = JobEvent.objects.filter(job_id=job_id).order_by("-seq").first()
    return last.message if last else ""


def terminal(job_id: str, timeout: float = 20) -> Job:
    return wait_for(
        lambda: (job := Job.objects.get(pk=job_id)).is_terminal and job, timeout, "the end"
    )


def active_sessions() -> QuerySet[Job]:
    return Job.objects.filter(kind="session", status__in=JobStatus.active())


def end_all_sessions(timeout: float = 20) -> None:
    """Cancel every active session job (the service: the host is told) and wait until
    each has ended, so no test leaves a server behind for the next."""
    for job in active_sessions():
        job_cancel(job=job, actor=actor_of())
    deadline = time.monotonic() + timeout
    while active_sessions().exists():
        if time.monotonic() > deadline:
            left = {job.pk: (job.status, steps(job.pk)[-3:]) for job in active_sessions()}
            pytest.fail(f"sessions still active {timeout} s after their cancel: {left}")
        time.sleep(0.05)


# --- processes -----------------------------------------------------------------------------


def scratch_dir(job_id: str) -> Path:
    return Path(settings.MATRIX_DATA_DIR) / "mcp" / job_id


def session_pids(job_id: str) -> list[int]:
    """Live host pids whose working directory is the session's scratch dir (bwrap and
    everything it runs start there), deleted or not."""
    scratch = str(scratch_dir(job_id))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd").startswith(scratch) and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def no_session_processes(job_id: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (left := session_pids(job_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes of {job_id} survived: {left}"
