"""A server's stderr: a bounded tail for error messages and a rate-bounded line stream.

The host shows the tail in "server exited" and handshake errors and turns each
streamed line into a ``log`` event. A chatty server must not flood the event stream,
so at most ``lines_per_second`` lines pass per one-second window; the rest are counted
and summarised in one line when the next window opens or the stream ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

LineCallback = Callable[[str], None]


class StderrTap:
    """Collects stderr chunks: a ring of the last ``ring_bytes`` and bounded lines."""

    def __init__(
        self,
        *,
        ring_bytes: int = 65_536,
        on_line: LineCallback | None = None,
        lines_per_second: int = 20,
        max_line_bytes: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ring_bytes = ring_bytes
        self.on_line = on_line
        self.lines_per_second = lines_per_second
        self.max_line_bytes = max_line_bytes
        self.clock = clock
        self.suppressed_total = 0
        self._ring = bytearray()
        self._partial = bytearray()
        self._skipping = False
        self._window_start = -1.0
        self._window_count = 0
        self._suppressed = 0

    def tail(self) -> str:
        """The last ``ring_bytes`` of stderr as text (whitespace-trimmed)."""
        return self._ring.decode("utf-8", errors="replace").strip()

    def feed(self, chunk: bytes) -> None:
        """Record a chunk and stream the lines it completes."""
        self._ring += chunk
        if len(self._ring) > self.ring_bytes:
            del self._ring[: len(self._ring) - self.ring_bytes]
        if self.on_line is not None:
            self._split(chunk)

    def _split(self, chunk: bytes) -> None:
        *complete, rest = (bytes(self._partial) + chunk).split(b"\n")
        if self._skipping:  # the rest of a line already streamed cut short
            if not complete:
                return
            self._skipping = False
            complete = complete[1:]
        for line in complete:
            self._emit(line)
        self._partial = bytearray(rest)
        if len(self._partial) > self.max_line_bytes:
            self._emit(bytes(self._partial))
            self._partial.clear()
            self._skipping = True

    def finish(self) -> None:
        """The stream ended: emit the unterminated last line and any pending summary."""
        if self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()
        self._flush_summary()

    def _emit(self, raw: bytes) -> None:
        text = raw[: self.max_line_bytes].decode("utf-8", errors="replace").rstrip()
        if len(raw) > self.max_line_bytes:
            text += " …"
        if not text:
            return
        now = self.clock()
        if now - self._window_start >= 1.0:
            self._flush_summary()
            self._window_start, self._window_count = now, 0
        if self._window_count >= self.lines_per_second:
            self._suppressed += 1
            self.suppressed_total += 1
            return
        self._window_count += 1
        self._call(text)

    def _flush_summary(self) -> None:
        if self._suppressed:
            count, self._suppressed = self._suppressed, 0
            self._call(f"({count} more stderr lines not streamed: over {self.lines_per_second}/s)")

    def _call(self, text: str) -> None:
        assert self.on_line is not None
        try:
            self.on_line(text)
        except Exception:  # a broken callback must not stop the reader
            logger.exception("stderr line callback failed")
