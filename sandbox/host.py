"""The sandbox host: one asyncio process that will hold many live MCP sessions.

This is the placeholder the sandbox issue fills in. It already is a real host on the
bus: it heart-beats (role "sandbox_host") with its reply channel in the row's meta,
consumes the shared ``sandbox.start`` channel and its own reply channel, and answers
every request that names a ``reply_channel`` with a clear refusal, so callers get an
answer instead of a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django import db
from django.conf import settings

from runtimes.choices import ProcessRole
from runtimes.services import new_instance_id, process_heartbeat_beat, process_heartbeat_stop

logger = logging.getLogger(__name__)

START_CHANNEL = "sandbox.start"
REPLY_TYPE = "sandbox.reply"
NOT_YET = "sandbox sessions land with the sandbox issue"
RECEIVE_TIMEOUT = 1.0
BUS_RETRY = 1.0
BUS_RETRY_MAX = 10.0


class SandboxHost:
    """One sandbox host process: its heartbeat row and its two channels on the bus.

    ``run(stop)`` returns soon after ``stop`` is set: every receive is bounded, the
    listeners are cancelled, and the heartbeat row is marked stopped.
    """

    def __init__(self, *, layer: BaseChannelLayer | None = None, interval: float = 0) -> None:
        self.layer: Any = layer or get_channel_layer()
        self.interval = interval or settings.MATRIX_HEARTBEAT_SECONDS
        self.instance = new_instance_id(ProcessRole.SANDBOX_HOST)
        self.reply_channel = ""

    async def run(self, stop: asyncio.Event) -> None:
        self.reply_channel = await self.layer.new_channel()
        await self._beat({"reply_channel": self.reply_channel})
        logger.info("sandbox host listening on %s and %s", START_CHANNEL, self.reply_channel)
        tasks = [
            asyncio.create_task(self._listen(START_CHANNEL, stop)),
            asyncio.create_task(self._listen(self.reply_channel, stop)),
            asyncio.create_task(self._heartbeat(stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown()

    async def handle(self, message: dict[str, Any]) -> None:
        """Answer one request; for now every request is refused with a clear error."""
        reply_to = message.get("reply_channel")
        if not isinstance(reply_to, str) or not reply_to:
            logger.warning("ignoring a %s message without reply_channel", message.get("type"))
            return
        reply: dict[str, Any] = {"type": REPLY_TYPE, "ok": False, "error": NOT_YET}
        if "request_id" in message:
            reply["request_id"] = message["request_id"]
        await self.layer.send(reply_to, reply)

    async def _listen(self, channel: str, stop: asyncio.Event) -> None:
        delay = BUS_RETRY
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(self.layer.receive(channel), RECEIVE_TIMEOUT)
                await self.handle(message)
            except TimeoutError:
                pass
            except Exception as exc:  # the bus may be restarting: say so, wait, try again
                logger.warning("bus error on %s (%r); retrying in %.0f s", channel, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BUS_RETRY_MAX)
                continue
            delay = BUS_RETRY

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.interval)
            await self._beat()

    async def _beat(self, meta: dict[str, Any] | None = None) -> None:
        try:
            await sync_to_async(process_heartbeat_beat)(
                instance=self.instance, role=ProcessRole.SANDBOX_HOST, meta=meta
            )
        except Exception:  # a missed beat is logged; the next one may well succeed
            logger.exception("heartbeat of %s failed", self.instance)

    async def _shutdown(self) -> None:
        await sync_to_async(process_heartbeat_stop)(instance=self.instance)
        await sync_to_async(db.connections.close_all)()
        close_pools = getattr(self.layer, "close_pools", None)
        if close_pools is not None:
            await asyncio.wait_for(close_pools(), timeout=RECEIVE_TIMEOUT)
        logger.info("sandbox host stopped")
