"""Handing jobs to the processes that run them.

Batch jobs go to the django-q2 queue; session jobs (live sandboxes) are announced on
the bus, where a sandbox host claims them. Dispatching twice is harmless: claims are
conditional updates.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from jobs.choices import JobKind
from matrixcloud.lib.busloop import bus_run

logger = logging.getLogger(__name__)
SESSION_START_CHANNEL = "sandbox.start"


def dispatch(job_id: str, kind: str) -> None:
    """Hand ``job_id`` to the django-q2 queue (batch) or to the sandbox hosts (session)."""
    if kind == JobKind.BATCH:
        from django_q.tasks import async_task

        # Inside a transaction, because outside one django-q2's ORM broker first calls
        # close_old_connections(), which (CONN_MAX_AGE=0) drops this request's connection
        # and opens another just for the insert: ~1 extra connect per job, costly on
        # PostgreSQL (a backend process each). A no-op for the Redis broker.
        try:
            with transaction.atomic():
                async_task("jobs.tasks.run_job", job_id, task_name=f"job:{job_id}")
        except Exception:  # the broker is down: the row is committed, the janitor re-dispatches
            logger.warning("could not queue job %s", job_id, exc_info=True)
        return
    _bus_send(SESSION_START_CHANNEL, {"type": "sandbox.start", "job_id": job_id})


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
    except Exception:  # the janitor re-dispatches what the bus lost
        logger.warning("could not send %s to %s", message.get("type"), channel, exc_info=True)
