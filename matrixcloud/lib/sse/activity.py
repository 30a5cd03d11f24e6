"""A workspace's activity: notices that keep the console's open lists fresh without polling.

The lists (jobs, sandboxes, the overview's counts, runtimes and join tokens) follow no
single job, so no job stream tells them that a job was created or a runtime joined.
Writers call :func:`activity_notice` (after commit it pushes ``{"topic": ...}`` to the
workspace's bus group); an :class:`ActivityStream` answers each push, and each quiet
keepalive tick, by reading the workspace's list *versions* (cheap aggregates the caller
supplies) and sending them when they changed. The database stays the truth: a push the
bus lost, or a stream that reconnected, is caught by the next read of the versions, and a
client re-reads a list only when its version moved. A notice carries no sequence number
(it names what to re-read, not what happened), so the hub's ``seq`` holds the topic's code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from matrixcloud.lib.busloop import bus_run
from matrixcloud.lib.sse.hub import HubRegistry
from matrixcloud.lib.sse.wire import KEEPALIVE, keepalive_seconds

logger = logging.getLogger(__name__)

TOPICS = ("jobs", "runtimes")  # jobs: sandbox sessions too (each has a backing job)
SETTLE = 0.25  # seconds a stream waits after a push for the rest of its burst
RETRY = b"retry: 2000\n\n"  # a browser reconnects this soon after the stream's lifetime

Versions = Callable[[], Awaitable[Mapping[str, str]]]


def activity_group(workspace_id: str) -> str:
    return f"activity.{workspace_id}"


def _route(message: Mapping[str, Any]) -> str:
    return activity_group(str(message["workspace_id"]))


hubs = HubRegistry(_route)


def activity_message(workspace_id: str, topic: str) -> dict[str, Any]:
    """The bus message of a notice (``seq`` is the topic's code: notices have no order)."""
    return {
        "type": "activity.notice",
        "workspace_id": workspace_id,
        "seq": TOPICS.index(topic) + 1,
        "event": {"topic": topic},
        "terminal": False,
    }


def activity_send(workspace_id: str, topic: str) -> None:
    """Push a notice now; a failed push only delays the lists to the streams' next tick."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        message = activity_message(workspace_id, topic)
        bus_run(lambda: layer.group_send(activity_group(workspace_id), message))
    except Exception:  # the bus is an accelerator, never the record
        logger.warning("could not publish %s activity of %s", topic, workspace_id, exc_info=True)


def activity_notice(workspace_id: str, topic: str) -> None:
    """After the current transaction commits, tell the workspace's open lists that
    ``topic`` may have changed (at once outside a transaction)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown activity topic {topic!r}")
    transaction.on_commit(lambda: activity_send(workspace_id, topic))


def versions_frame(versions: Mapping[str, str]) -> bytes:
    data = json.dumps({"versions": dict(versions)}, separators=(",", ":"), ensure_ascii=True)
    return b"data: %s\n\n" % data.encode("ascii")


class ActivityStream:
    """One client's notices for ``workspace_id``: its list versions at the start, then
    whenever a push or a quiet tick finds them changed; it ends after ``lifetime``
    seconds (the browser reconnects and gets the versions again). Every wait is bounded
    by the next tick or the end; the subscription is released however it ends."""

    def __init__(
        self,
        workspace_id: str,
        versions: Versions,
        *,
        lifetime: float,
        keepalive: float | None = None,
    ) -> None:
        self._group = activity_group(workspace_id)
        self._versions = versions
        self._lifetime = lifetime
        self._keepalive = keepalive
        self._sent: Mapping[str, str] | None = None

    async def chunks(self) -> Any:
        subscription = await hubs.current().subscribe(self._group)
        loop = asyncio.get_running_loop()
        keepalive = self._keepalive if self._keepalive is not None else keepalive_seconds()
        ends_at = loop.time() + self._lifetime
        try:
            yield RETRY + await self._changed_frame()
            tick_at = loop.time() + keepalive
            while loop.time() < ends_at:
                frame = await subscription.next(min(tick_at, ends_at))
                pushed = frame is not None or subscription.lagging
                if not pushed and loop.time() < tick_at - 0.001:
                    continue  # an early timer, or the end (the loop checks)
                if pushed:
                    await asyncio.sleep(SETTLE)  # one read for the whole burst
                subscription.resync()
                chunk = await self._changed_frame()
                if chunk or not pushed:
                    tick_at = loop.time() + keepalive
                    yield chunk or KEEPALIVE
                if not pushed:
                    await subscription.rejoin()
        finally:
            subscription.close()

    async def _changed_frame(self) -> bytes:
        """The versions when they differ from the last ones sent (b"" otherwise, or when
        they could not be read: the next tick reads again)."""
        try:
            versions = await self._versions()
        except Exception:
            logger.warning("could not read the activity versions of %s", self._group, exc_info=True)
            return b""
        if versions == self._sent:
            return b""
        self._sent = versions
        return versions_frame(versions)
