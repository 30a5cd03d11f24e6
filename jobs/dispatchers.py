"""Handing jobs to the processes that run them.

A batch job waits in its row, the queue: dispatching it wakes the workers
(``matrixcloud.lib.wake``), whose claim loops take it; a worker that misses the wake
finds it at its next idle poll. Session jobs (live sandboxes) are announced on the
bus, where a sandbox host claims them. Dispatching twice is harmless: claims are
conditional updates.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

from jobs.choices import JobKind
from matrixcloud.lib.busloop import bus_run
from matrixcloud.lib.wake import wake_workers

logger = logging.getLogger(__name__)
SESSION_START_CHANNEL = "sandbox.start"


def dispatch(job_id: str, kind: str) -> None:
    """Wake the workers (batch) or tell the sandbox hosts (session) of ``job_id``."""
    if kind == JobKind.BATCH:
        wake_workers()
        return
    _bus_send(SESSION_START_CHANNEL, {"type": "sandbox.start", "job_id": job_id})


def slot_freed() -> None:
    """A running batch job ended: its slot is free. Only its own worker is told (it has
    a runner thread free, and nobody else can have freed it); where there is no worker
    in this process (the web process cancelled a job), every worker is."""
    wake_workers(local_only=True)


def signal_cancel(job_id: str, kind: str) -> None:
    """Tell a session job's host at once; batch runners notice by polling the row."""
    if kind == JobKind.SESSION:
        from jobs.models import Job

        runner = Job.objects.filter(pk=job_id).values_list("runner", flat=True).first()
        if runner:
            _bus_send(runner, {"type": "sandbox.stop", "job_id": job_id})


def _bus_send(channel: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        bus_run(lambda: layer.send(channel, message))
    except Exception:  # the sandbox host's sweep starts what the bus lost
        logger.warning("could not send %s to %s", message.get("type"), channel, exc_info=True)
