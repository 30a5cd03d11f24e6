"""A session's server stderr as ``log`` events: batched, and bounded in number.

The MCP client already limits the lines it streams to 20 a second; this pump writes
them in batches (one transaction per batch) and stops after :data:`MAX_LOG_EVENTS`
for the session, saying how many more it left out when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sandbox.host import records

logger = logging.getLogger(__name__)

MAX_LOG_EVENTS = 500
BATCH_DELAY = 0.05  # lines arriving together go out in one transaction
CLOSE_WAIT = 2.0
LOG_STEP, LOG_STATUS = "log", "running"


class LogPump:
    """Collects stderr lines (a sync callback on the loop) and emits them as events."""

    def __init__(self, job_id: str, *, limit: int = MAX_LOG_EVENTS) -> None:
        self.job_id = job_id
        self.limit = limit
        self.accepted = 0
        self.dropped = 0
        self._lines: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def line(self, text: str) -> None:
        """Take one stderr line (``McpClient``'s ``on_stderr``); never blocks."""
        if self._closed:
            return
        if self.accepted >= self.limit:
            self.dropped += 1
            return
        self.accepted += 1
        self._lines.append(text)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"logs-{self.job_id}")

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_DELAY)
            self._wake.clear()
            await self._flush()

    async def _flush(self, extra: str = "") -> None:
        batch, self._lines = self._lines, []
        events: list[records.Event] = [(LOG_STEP, LOG_STATUS, line, None) for line in batch]
        if extra:
            events.append((LOG_STEP, LOG_STATUS, extra, None))
        if not events:
            return
        try:
            await records.run(records.events_emit, self.job_id, events)
        except Exception:  # losing log lines must not end the session
            logger.warning("could not write log events of %s", self.job_id, exc_info=True)

    async def close(self) -> None:
        """Write what is left (and how much was left out); bounded by :data:`CLOSE_WAIT`."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT)
        extra = f"({self.dropped} more stderr lines not streamed)" if self.dropped else ""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush(extra), CLOSE_WAIT)
