"""``manage.py worker``: the django-q2 cluster, as ``qcluster`` runs it, plus a heartbeat
and the janitor's sweep."""

from __future__ import annotations

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
from django.core.management.base import BaseCommand, CommandError

from jobs.choices import ProcessRole
from jobs.heartbeats import new_instance_id, process_heartbeat_beat, process_heartbeat_stop
from jobs.janitor import janitor_schedule, janitor_sweep

logger = logging.getLogger(__name__)
SENTINEL_POLL = 1.0
JANITOR_SECONDS = 5.0
WORKER_CONN_MAX_AGE = 300
BROKER_RETRY_SECONDS = 1.0  # the pusher's wait after a broker error (django-q2: 10 s)


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
        finally:
            db.close_old_connections()  # as after a request: a broken one is not reused

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


class Command(BaseCommand):
    """Run the django-q2 cluster exactly as ``qcluster`` does, heart-beating as "worker".

    SIGTERM or SIGINT to this process is the cluster's graceful stop (the sentinel drains
    its pool); the heartbeat row is then marked stopped and the command exits 0. A
    sentinel that dies on its own is an error, so a supervisor restarts the worker.
    """

    help = "Run the django-q2 cluster (as qcluster does) with a process heartbeat."
    # serve runs the system checks once; here they would import the whole API (~0.5 s
    # per start and restart) and let a broken view stop a role that never serves one.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        from django_q.cluster import Cluster  # sets Django up on import, as qcluster does

        settings.SECRET_KEY  # noqa: B018  (the cluster signs tasks with it, as qcluster checks)
        _persistent_connections()
        _short_broker_backoff()
        cluster = Cluster()
        stopping = self._trap_signals(cluster)
        heartbeat = Heartbeat(
            instance=new_instance_id(ProcessRole.WORKER),
            role=ProcessRole.WORKER,
            interval=settings.MATRIX_HEARTBEAT_SECONDS,
        )
        heartbeat.beat({"cluster": cluster.name, "workers": settings.Q_CLUSTER["workers"]})
        janitor_schedule()
        # The first sweep at once: a restart ends what its previous incarnation left.
        janitor = Periodic(
            name="janitor", interval=JANITOR_SECONDS, action=janitor_sweep, at_once=True
        )
        # No database connection may cross the fork into the sentinel and its pool.
        db.connections.close_all()
        cluster.start()
        if stopping.is_set():  # signalled before the fork
            _request_stop(cluster)
        # After the fork: the cluster's processes never inherit these threads.
        heartbeat.start()
        janitor.start()
        try:
            self._wait_for(cluster)
        finally:
            janitor.stop()
            heartbeat.stop()
            process_heartbeat_stop(instance=heartbeat.instance)
            db.connections.close_all()
        if not stopping.is_set():
            code = cluster.sentinel.exitcode if cluster.sentinel else None
            raise CommandError(f"the django-q2 sentinel died (exit code {code})")
        gc.freeze()  # skips the interpreter's final collection: ~0.5 s of exit with this heap

    def _trap_signals(self, cluster: Any) -> threading.Event:
        """Note that a stop was asked for, then ask the cluster to stop as qcluster does."""
        stopping = threading.Event()

        def handle(signum: int, frame: FrameType | None) -> None:
            if not stopping.is_set() and cluster.sentinel is not None:
                _request_stop(cluster)
            stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        return stopping

    def _wait_for(self, cluster: Any) -> None:
        sentinel = cluster.sentinel
        while sentinel is not None and sentinel.is_alive():
            sentinel.join(timeout=SENTINEL_POLL)


def _short_broker_backoff() -> None:
    """After a broker error django-q2's pusher sleeps 10 s, then exits for its sentinel to
    start a new one: with the bus back after a restart, jobs waited those 10 s. Its
    ``sleep`` is the module's own (inherited by the forked pusher): bound it."""
    import django_q.pusher

    def bounded(seconds: float) -> None:
        time.sleep(min(seconds, BROKER_RETRY_SECONDS))

    django_q.pusher.sleep = bounded


def _persistent_connections() -> None:
    """Keep database connections open in this process and the cluster it forks.

    django-q2's pusher calls close_old_connections() on every poll and the pool before
    every task; with the default CONN_MAX_AGE=0 that is a new connection each time (on
    PostgreSQL a backend process forked every poll interval). A worker is a long-lived
    process: reuse connections, checked before reuse so a broken one is replaced.
    """
    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = WORKER_CONN_MAX_AGE
        database["CONN_HEALTH_CHECKS"] = True


def _request_stop(cluster: Any) -> None:
    """Set the cluster's stop event (its graceful stop) from a helper thread.

    Not from the signal handler itself: ``multiprocessing.Event.set`` waits for every
    process sleeping on the event to wake, and a sentinel killed while it slept (a
    SIGTERM sent to the whole process group kills it too) never does, which hung the
    worker forever. The main thread only waits for the sentinel to end, with a timeout.
    """
    if cluster.stop_event is not None:
        threading.Thread(target=cluster.stop_event.set, name="cluster-stop", daemon=True).start()
