"""Runs one claimed batch job in a worker's runner thread: the handler under a
watchdog, then its finish.

The watchdog thread polls the job row (every ``POLL_SECONDS``) for a cancel request,
enforces the TTL (for a job timed by progress, the time since its last progress), and
heart-beats the row so the janitor can tell a live runner from a dead one. On cancel or
expiry it interrupts the context, which wakes the handler's waits and kills its
subprocess groups.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from typing import Any

from django import db
from django.utils import timezone

from jobs import registry
from jobs.choices import JobStatus
from jobs.handlers import BaseHandler, JobContext, JobFailed, JobInterrupted
from jobs.models import Job
from jobs.services import job_claim, job_finish
from matrixcloud.lib.processes import process_gone

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 2.0


def runner_id() -> str:
    """How a job row names the process running it: ``worker:<host>:<pid>``."""
    return f"worker:{socket.gethostname()}:{os.getpid()}"


def runner_gone(runner: str) -> bool:
    """True when ``runner`` is a process of this host that no longer runs.

    Lets the janitor end a dead local worker's (or sandbox host's) job after a few
    missed heartbeats instead of the full stale threshold. Anything it cannot tell
    (another host, a pid now used by another process) counts as alive: the threshold
    then decides.
    """
    role, _, rest = runner.partition(":")
    host, _, pid = rest.rpartition(":")
    if role != "worker":
        return _sandbox_host_gone(runner)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return process_gone(int(pid))


def _sandbox_host_gone(reply_channel: str) -> bool:
    """A session job's runner is its host's reply channel, which the host's heartbeat
    row records with its machine and pid: gone when that process no longer runs here."""
    from jobs.choices import ProcessRole
    from jobs.models import ProcessHeartbeat

    if not reply_channel:
        return False
    row = (
        ProcessHeartbeat.objects.filter(
            role=ProcessRole.SANDBOX_HOST, meta__reply_channel=reply_channel
        )
        .values("hostname", "pid")
        .first()
    )
    if row is None or row["hostname"] != socket.gethostname():
        return False
    return process_gone(int(row["pid"]))


class Watchdog(threading.Thread):
    """Watches one running job: cancel requests, TTL, heartbeat."""

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(name=f"watchdog-{ctx.job.pk}", daemon=True)
        self.ctx = ctx
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        last_beat = 0.0
        try:
            while not self._stop_event.wait(POLL_SECONDS):
                last_beat = self._safe_tick(last_beat)
        finally:
            db.connection.close()

    def _safe_tick(self, last_beat: float) -> float:
        """One tick; a database hiccup must not end the watch (nor the heartbeats, or
        the janitor would take a live job for a dead one)."""
        try:
            return self._tick(last_beat)
        except db.DatabaseError:
            logger.warning("watchdog of %s: database error", self.ctx.job.pk, exc_info=True)
            db.connection.close()  # reconnect on the next tick
            return last_beat

    def _tick(self, last_beat: float) -> float:
        job = self.ctx.job
        now = timezone.now()
        expires_at = self.ctx.expires_at()  # moves with progress for a model download
        if now >= expires_at:
            self.ctx.interrupt(JobStatus.EXPIRED)
        row = Job.objects.filter(pk=job.pk).values("cancel_requested_at", "status").first()
        if row is None or row["cancel_requested_at"] is not None:
            self.ctx.interrupt(JobStatus.CANCELLED)
        elif row["status"] != JobStatus.RUNNING:
            self.ctx.interrupt(JobStatus.CANCELLED)  # ended elsewhere (janitor): stop work
        mono = now.timestamp()
        if mono - last_beat >= HEARTBEAT_SECONDS:
            beat: dict[str, Any] = {"heartbeat_at": now}
            if job.deadline_at is not None:  # the janitor reads the moved deadline
                beat.update(expires_at=expires_at, progress_at=self.ctx.progress_at)
            Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(**beat)
            return mono
        return last_beat


def run_job(job_id: str) -> None:
    """Claim ``job_id`` and run it here (a no-op if another runner has it, it has ended,
    or no slot is free): what a worker does with a job it claimed, in this process."""
    job = job_claim(job_id, runner=runner_id())
    if job is not None:
        JobRunner(job).run()


class JobRunner:
    """Runs a job claimed for this process to exactly one terminal status."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def run(self) -> None:
        job = self.job
        handler_class = registry.handler_for(job.type)
        if handler_class is None:
            job_finish(job.pk, JobStatus.ERROR, error=f'unknown job type: "{job.type}"')
            return
        ctx = JobContext(job)
        watchdog = Watchdog(ctx)
        watchdog.start()
        try:
            status, result, error = self._execute(handler_class, ctx)
        finally:
            watchdog.stop()
            ctx.kill_all()
        job_finish(job.pk, status, result=result, error=error)

    def _execute(self, handler_class: type[BaseHandler], ctx: JobContext) -> tuple[str, Any, str]:
        try:
            params = handler_class.Params.model_validate(ctx.job.payload)
            result = handler_class(ctx, params).run()
            ctx.check()
        except JobInterrupted as exc:
            return exc.status, None, ""
        except JobFailed as exc:
            return ctx.interrupt_status or JobStatus.ERROR, None, str(exc) or "job failed"
        except Exception as exc:  # a bug in a handler: say so, keep the traceback
            if ctx.interrupt_status is not None:
                return ctx.interrupt_status, None, ""
            logger.exception("job %s (%s) crashed", ctx.job.pk, ctx.job.type)
            ctx.emit(
                "traceback",
                JobStatus.ERROR,
                f"internal error: {type(exc).__name__}: {exc}",
                data={"traceback": traceback.format_exc()[-8000:]},
            )
            return JobStatus.ERROR, None, f"internal error: {type(exc).__name__}: {exc}"
        return JobStatus.COMPLETE, result, ""
