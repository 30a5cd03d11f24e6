"""The tool calls a host handled, written in batches off the calls' path.

Writing each call as it ends (a row and an audit record, one transaction) put ORM work
on the host's database thread right when the next call arrived, and the event loop then
waited for the interpreter lock. Calls are queued here instead and written every
:data:`FLUSH_SECONDS` (or sooner when :data:`BATCH` are waiting), all in one
transaction; the host flushes what is left when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sandbox.host import records
from sandbox.services import CallEntry, tool_calls_record

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
BATCH = 200
CLOSE_WAIT = 10.0


class CallRecorder:
    """Queues :class:`CallEntry` items and writes them in batches."""

    def __init__(self) -> None:
        self._pending: list[CallEntry] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, entry: CallEntry) -> None:
        """Queue one call (a sync call on the loop; never blocks)."""
        self._pending.append(entry)
        if len(self._pending) >= BATCH:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="call-recorder")

    async def _run(self) -> None:
        while self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued so far (a failed batch is logged and dropped)."""
        self._full.clear()
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await records.run(tool_calls_record, batch)
        except Exception:
            logger.exception("could not record %d tool calls", len(batch))

    async def close(self) -> None:
        """Write what is left (bounded), at shutdown."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), CLOSE_WAIT)
