"""``manage.py worker``: runs batch jobs from their rows, and the apps' sweeps.

One process, no children: a claim loop (the main thread) that claims queued batch jobs
for a bounded pool of runner threads (``MATRIX_RUNTIME_WORKERS``), a bus listener that
hears the wakes ``dispatch()`` sends, a sweeper that runs every app's sweep
(``AppConfig.sweep``: the jobs janitor, the accounts email outbox) every few seconds
and at once when a wake names the app, and a heartbeat.

The job row is the queue (``jobs.services.jobs_claim_waiting``): the claim loop looks
when woken (a wake on the bus, a runner thread coming free) and at least once a
second, so a wake the bus lost costs at most that second and an idle worker costs one
indexed read a second.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from django import db
from django.conf import settings
from django.core.management.base import BaseCommand

from jobs.choices import ProcessRole
from jobs.heartbeats import new_instance_id, process_heartbeat_beat, process_heartbeat_stop
from jobs.models import Job
from jobs.runner import JobRunner, runner_id
from jobs.services import jobs_claim_waiting
from matrixcloud.lib.sweeps import sweep_all, sweep_app
from matrixcloud.lib.wake import WAKE_GROUP, bus_layer, listening

logger = logging.getLogger(__name__)
IDLE_POLL = 1.0  # the claim loop looks at least this often, woken or not
SWEEP_SECONDS = 5.0
RECEIVE_TIMEOUT = 30.0  # the listener re-joins the wake group this often
BUS_RETRY = 0.5  # after a bus error, doubling up to BUS_RETRY_MAX
BUS_RETRY_MAX = 2.0


class Periodic:
    """A daemon thread that calls ``action`` every ``interval`` seconds until stopped.

    It is a daemon and its waits are bounded, so it never keeps the process alive; a
    failing call is logged and the next one runs on time; it closes its own database
    connections when it stops.
    """

    def __init__(
        self, *, name: str, interval: float, action: Callable[[], object], at_once: bool = False
    ) -> None:
        self.name, self.interval, self.action, self.at_once = name, interval, action, at_once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def call(self) -> None:
        try:
            self.action()
        except Exception:  # a missed round is logged; the next one may well succeed
            logger.exception("%s failed", self.name)
            _drop_connection()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        try:
            if self.at_once:
                self.call()
            while not self._stop.wait(self.interval):
                self.call()
        finally:
            db.connections.close_all()


class Heartbeat(Periodic):
    """Records this process as alive every ``interval`` seconds."""

    def __init__(self, *, instance: str, role: str, interval: float) -> None:
        self.instance, self.role = instance, role
        super().__init__(name=f"heartbeat-{role}", interval=interval, action=self.beat)

    def beat(self, meta: dict[str, Any] | None = None) -> None:
        try:
            process_heartbeat_beat(instance=self.instance, role=self.role, meta=meta)
        except Exception:  # a missed beat is logged; the next one may well succeed
            logger.exception("heartbeat of %s failed", self.instance)
            _drop_connection()


class Sweeper(Periodic):
    """Every app's sweep every ``interval`` seconds (the first at once: a restart ends
    what its previous incarnation left), and one app's as soon as it is asked for."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="sweeper", interval=interval, action=sweep_all, at_once=True)
        self._asked: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def ask(self, label: str) -> None:
        with self._lock:
            self._asked.add(label)
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        try:
            if self.at_once:
                self.call()
            due = time.monotonic() + self.interval
            while not self._stop.is_set():
                self._wake.wait(max(due - time.monotonic(), 0))
                self._wake.clear()
                if self._stop.is_set():
                    break
                if time.monotonic() >= due:
                    self.call()
                    due = time.monotonic() + self.interval
                    with self._lock:
                        self._asked.clear()  # just swept them all
                    continue
                with self._lock:
                    asked, self._asked = self._asked, set()
                for label in sorted(asked):
                    sweep_app(label)
        finally:
            db.connections.close_all()


class RunnerPool:
    """``size`` runner threads, each running the jobs it is handed one at a time.

    The threads live as long as the worker: a handler's subprocess is armed to die with
    the thread that started it (``PR_SET_PDEATHSIG`` follows the thread, not the
    process), and each thread keeps its own database connection between jobs.
    """

    def __init__(self, size: int, on_free: Callable[[], None]) -> None:
        self.size, self._on_free = size, on_free
        self._idle = size
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._jobs: list[Job | None] = []
        self._threads = [
            threading.Thread(target=self._serve, name=f"runner-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def free(self) -> int:
        with self._lock:
            return self._idle

    def submit(self, job: Job) -> None:
        with self._ready:
            self._idle -= 1
            self._jobs.append(job)
            self._ready.notify()

    def drain(self) -> None:
        """Let every running job end, then end the threads."""
        with self._ready:
            self._jobs.extend([None] * self.size)
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._jobs:
                        self._ready.wait()
                    job = self._jobs.pop(0)
                if job is None:
                    return
                _connection_checked()
                self._run(job)
                with self._lock:
                    self._idle += 1
                self._on_free()
        finally:
            db.connections.close_all()

    def _run(self, job: Job) -> None:
        try:
            JobRunner(job).run()
        except Exception:  # the finish failed (a database outage): the janitor ends it
            logger.exception("runner of %s failed", job.pk)
            _drop_connection()


class WakeListener:
    """Joins the wake group on the bus and calls ``on_wake`` with every wake it hears,
    in a daemon thread with its own event loop; with no bus it does nothing (the claim
    loop's idle poll is then the only look)."""

    def __init__(self, on_wake: Callable[[dict[str, Any]], None]) -> None:
        self.on_wake = on_wake
        self.layer = bus_layer()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="wake-listener", daemon=True)

    def start(self) -> None:
        if self.layer is not None:
            self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel)
            self._thread.join(timeout=5)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._listen())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()

    async def _listen(self) -> None:
        channel = await self.layer.new_channel("worker.")  # a name only: no bus round trip
        delay = BUS_RETRY
        try:
            while True:
                try:
                    await self.layer.group_add(WAKE_GROUP, channel)
                    message = await asyncio.wait_for(self.layer.receive(channel), RECEIVE_TIMEOUT)
                    self.on_wake(message)
                except TimeoutError:
                    pass
                except Exception as exc:  # the bus may be restarting: say so, wait, try again
                    logger.warning("bus error on the wake group (%r); again in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BUS_RETRY_MAX)
                    continue
                delay = BUS_RETRY
        finally:
            try:
                await asyncio.wait_for(self.layer.group_discard(WAKE_GROUP, channel), 2)
            except Exception:  # the bus is gone: the group forgets the channel in time
                logger.debug("could not leave the wake group", exc_info=True)


class Command(BaseCommand):
    """Run batch jobs and the apps' sweeps, heart-beating as "worker".

    SIGTERM or SIGINT is the graceful stop: no new claims, every running job runs to
    its end (each within its TTL), the heartbeat row is marked stopped and the command
    exits 0. A job of a worker killed outright is ended by a peer's janitor.
    """

    help = "Run batch jobs from their rows, and the apps' sweeps, with a process heartbeat."
    # serve runs the system checks once; here they would import the whole API (~0.5 s
    # per start and restart) and let a broken view stop a role that never serves one.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        self.woken = threading.Event()
        self._trap_signals()
        self.runner = runner_id()
        self.sweeper = Sweeper(SWEEP_SECONDS)
        self.pool = RunnerPool(settings.MATRIX_WORKERS, on_free=self.woken.set)
        listener = WakeListener(self._on_wake)
        heartbeat = Heartbeat(
            instance=new_instance_id(ProcessRole.WORKER),
            role=ProcessRole.WORKER,
            interval=settings.MATRIX_HEARTBEAT_SECONDS,
        )
        heartbeat.beat({"runner": self.runner, "threads": self.pool.size})
        db.connections.close_all()  # the main thread's next query reconnects
        for part in (heartbeat, self.sweeper, listener):
            part.start()
        self.stdout.write(f"worker {self.runner}: {self.pool.size} runner threads, running.")
        self.stdout.flush()
        try:
            with listening(self._on_wake):  # wakes sent in this process (a job's finish)
                self._claim_loop()
            self.pool.drain()
        finally:
            listener.stop()
            self.sweeper.stop()
            heartbeat.stop()
            process_heartbeat_stop(instance=heartbeat.instance)
            db.connections.close_all()
        gc.freeze()  # skips the interpreter's final collection: ~0.5 s of exit with this heap

    def _on_wake(self, message: dict[str, Any]) -> None:
        if message.get("sweep"):
            self.sweeper.ask(str(message["sweep"]))
        else:
            self.woken.set()

    def _claim_loop(self) -> None:
        while not self.stopping.is_set():
            self.woken.clear()
            for job in self._claim():
                self.pool.submit(job)
            self.woken.wait(IDLE_POLL)

    def _claim(self) -> list[Job]:
        try:
            return jobs_claim_waiting(runner=self.runner, room=self.pool.free())
        except Exception:  # a database outage: the next look tries again
            logger.warning("could not claim jobs", exc_info=True)
            _drop_connection()
            return []

    def _trap_signals(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()
            self.woken.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def _drop_connection() -> None:
    """Close this thread's database connection after an error: the next query opens a
    new one rather than reuse one that may be broken."""
    try:
        db.connection.close()
    except Exception:  # already broken: nothing to close
        logger.debug("closing a broken connection failed", exc_info=True)


def _connection_checked() -> None:
    """Before a runner thread's next job: a connection the database dropped while the
    thread waited (a restart) is closed, so the job connects again instead of failing
    at its first write. One round trip, on a kept connection only."""
    connection = db.connection
    if connection.connection is not None and not connection.is_usable():
        connection.close()
