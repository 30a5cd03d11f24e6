"""Job events: written as rows, then pushed on the bus once the row is committed.

``job_event_emit`` is the only way events are made; each also tells the workspace's open
console lists to look again (``matrixcloud.lib.sse.activity``). The per-job sequence comes from
an increment of ``Job.last_seq`` inside the same transaction as the insert, so
sequence numbers are dense and ordered even with several emitters. Event text often
comes from programs we do not control (a server's stderr, a tool's answer), so a NUL
or a lone surrogate in the message or data, which PostgreSQL cannot store, is replaced
by U+FFFD instead of failing the insert.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from jobs.models import Job, JobEvent
from matrixcloud.lib.busloop import bus_run
from matrixcloud.lib.sse.activity import activity_notice

logger = logging.getLogger(__name__)
REPLACEMENT = "\ufffd"


def storable(value: Any) -> Any:
    """``value`` with every NUL and lone surrogate in its strings (keys too) replaced."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", REPLACEMENT)
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                value = "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in value)
        return value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def job_group(job_id: str) -> str:
    return f"job.{job_id}"


def event_message(event: JobEvent) -> dict[str, Any]:
    """The bus message for an event (``type`` routes it to stream consumers)."""
    return {
        "type": "job.event",
        "job_id": event.job_id,
        "seq": event.seq,
        "event": event.as_wire(),
        "terminal": event.terminal,
    }


def job_event_emit(
    job_id: str,
    *,
    step: str,
    status: str,
    message: str,
    data: dict[str, Any] | None = None,
    terminal: bool = False,
) -> JobEvent:
    """Append an event to the job and publish it after commit.

    ``terminal`` marks the job's last event (only ``jobs.services`` sets it); streams
    close after it.
    """
    if not message:
        raise ValueError("every job event needs a message")
    with transaction.atomic():
        Job.objects.filter(pk=job_id).update(last_seq=F("last_seq") + 1)
        seq, workspace_id = (
            Job.objects.filter(pk=job_id).values_list("last_seq", "workspace_id").get()
        )
        event = JobEvent.objects.create(
            job_id=job_id,
            seq=seq,
            step=step,
            status=status,
            message=storable(message[:10_000]),
            data=storable(data) if data else None,
            terminal=terminal,
        )
        transaction.on_commit(lambda: publish(event_message(event)))
        # The workspace's open lists (jobs, sandboxes, counts) re-read their versions.
        activity_notice(workspace_id, "jobs")
    return event


def publish(message: dict[str, Any]) -> None:
    """Push a message to the job's group; the database already holds it, so a failed
    push only delays live delivery until the stream re-reads the rows."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        bus_run(lambda: layer.group_send(job_group(message["job_id"]), message))
    except Exception:  # the bus is an accelerator, never the record
        logger.warning(
            "could not publish event %s#%s", message["job_id"], message["seq"], exc_info=True
        )
