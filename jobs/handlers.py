"""The base every job handler builds on, and the context it runs in.

A handler is one class per job type, registered with ``@jobs.registry.register``,
with a pydantic ``Params`` model (checked when the job is created, so bad payloads are
a 422 at once) and one ``run()``. ``BaseHandler`` never finishes a job itself: the
runner does, mapping ``JobFailed`` to an ``error`` with its message and anything
unexpected to an ``error`` with the traceback in the job's events.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.utils import timezone
from pydantic import BaseModel, ConfigDict

from accounts.principals import Actor
from jobs.choices import JobKind, JobStatus
from jobs.events import job_event_emit
from jobs.models import Job
from matrixcloud.lib.processes import die_with_parent, kill_process_group


class JobFailed(Exception):
    """An expected failure: the job ends ``error`` with this message."""


class JobInterrupted(Exception):
    """Raised inside a handler when its job was cancelled or ran out of time."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class JobParams(BaseModel):
    """Base of handler parameter models: unknown keys ignored, as the original did.

    Kept on purpose: docs/COMPATIBILITY.md#c-03.
    """

    model_config = ConfigDict(extra="ignore")


class JobContext:
    """What a running handler may touch: its job, events, interruption, subprocesses.

    The runner's watchdog calls ``interrupt()`` on cancel or expiry; every wait here
    wakes up at once and every registered subprocess group is killed.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.progress_at = job.progress_at
        self._interrupted = threading.Event()
        self.interrupt_status: str | None = None
        self._procs: set[subprocess.Popen[Any]] = set()
        self._lock = threading.Lock()

    def emit(
        self, step: str, status: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        job_event_emit(self.job.pk, step=step, status=status, message=message, data=data)

    def progress(self) -> None:
        """Say the job made progress (bytes written): a job timed by progress
        (``BaseHandler.timed_by_progress``) then lives another ``ttl_seconds``."""
        self.progress_at = timezone.now()

    def expires_at(self) -> datetime:
        """When the job runs out of time: its ``expires_at``, or for a job timed by
        progress ``ttl_seconds`` after its last progress, never past its hard cap."""
        job = self.job
        if job.deadline_at is None or self.progress_at is None:
            return job.expires_at
        return min(self.progress_at + timedelta(seconds=job.ttl_seconds), job.deadline_at)

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    def check(self) -> None:
        """Raise ``JobInterrupted`` if the job was cancelled or expired."""
        if self.interrupt_status is not None:
            raise JobInterrupted(self.interrupt_status)

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; raise ``JobInterrupted`` as soon as the job is."""
        self._interrupted.wait(max(seconds, 0))
        self.check()

    def interrupt(self, status: str) -> None:
        if status not in (JobStatus.CANCELLED, JobStatus.EXPIRED):
            raise ValueError(status)
        with self._lock:
            if self.interrupt_status is None:
                self.interrupt_status = status
            procs = list(self._procs)
        self._interrupted.set()
        for proc in procs:
            kill_process_group(proc)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a subprocess in its own process group, killed with the job."""
        self.check()
        # Killed with the worker too: a SIGKILLed worker (its own group killed, this
        # child is in another) leaves no orphan.
        kwargs.setdefault("preexec_fn", die_with_parent(signal.SIGKILL))
        proc: subprocess.Popen[Any] = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        with self._lock:
            self._procs.add(proc)
            late = self.interrupt_status is not None
        if late:
            kill_process_group(proc)
        return proc

    def release(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
            self._procs.clear()
        for proc in procs:
            kill_process_group(proc)


class BaseHandler:
    """One job type: validated ``params`` in, a JSON-able result out of ``run()``."""

    kind: ClassVar[str] = JobKind.BATCH
    Params: ClassVar[type[JobParams]] = JobParams
    # May run again after its runner died (resuming what the first run left, such as a
    # partial download), up to MATRIX_RUNTIME_JOB_MAX_ATTEMPTS: see job_runner_lost.
    resumable: ClassVar[bool] = False
    # Timed by progress (``JobContext.progress``), not wall time: ``ttl_seconds`` is the
    # time allowed without progress, under the hard cap MATRIX_RUNTIME_MODEL_MAX_SECONDS.
    timed_by_progress: ClassVar[bool] = False

    def __init__(self, ctx: JobContext, params: JobParams) -> None:
        self.ctx = ctx
        self.params = params

    def run(self) -> Any:
        raise NotImplementedError

    @classmethod
    def admit(cls, *, actor: Actor, payload: dict[str, Any]) -> None:
        """Called by ``job_enqueue`` once the payload is valid, before any row is
        written: raise an ``ApplicationError`` to refuse a job its creator (``actor``)
        may not create. By default every creator may."""

    @classmethod
    def reserve(cls, *, workspace: Any) -> None:
        """Called by ``job_enqueue`` inside its transaction, just before the job row is
        written: the place for a limit that counts rows (raise an ``ApplicationError``
        to refuse; the count is serialised by what the handler locks). None by default."""

    @classmethod
    def ended(cls, job_id: str, status: str, error: str) -> None:
        """Called in the transaction that ends a job of this type, however it ends: its
        runner finished it, it was cancelled or expired while queued, or the janitor
        ended it when its worker died. Settle what the job owns; by default, nothing."""
