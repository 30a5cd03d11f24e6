"""One MatrixShell process run isolated to its end: output captured or streamed, bounded.

:func:`isolated_run` starts a :class:`~sandbox.isolation.SandboxSpec` through
``isolation.spawn`` (exactly as a sandboxed MCP server starts), closes its stdin, and
reads stdout and stderr until it exits, its time is up, its output passes the cap, or
``should_stop`` says so; then the whole process tree is stopped with
``terminate_tree``. Nothing here raises for what the command did: the
:class:`RunOutcome` says it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.isolation import SandboxSpec, spawn, terminate_tree

CHUNK = 64 * 1024
KILL_GRACE = 0.5
STOP_POLL = 0.1
MAX_LINE = 1024 * 1024  # longer streamed lines are cut (docs/COMPATIBILITY.md#c-11)


@dataclass
class RunOutcome:
    """How a run ended: exit code (-1 when killed), output, and why it was cut short
    (``disk_full``: set by the caller that knows the run's disk quota)."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    truncated: bool = False
    stopped: bool = False
    disk_full: bool = False
    duration_ms: int = 0


@dataclass
class _Capture:
    """Output read so far, in bytes, up to ``cap`` in all (stdout and stderr together)."""

    cap: int
    on_line: Callable[[str], None] | None
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    pending: dict[str, bytearray] = field(default_factory=dict)
    over: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, name: str, chunk: bytes) -> None:
        room = self.cap - len(self.out) - len(self.err)
        target = self.out if name == "stdout" else self.err
        target += chunk[: max(room, 0)]
        if len(chunk) > room:
            self.over.set()
        if self.on_line is not None:
            self._lines(name, chunk)

    def _lines(self, name: str, chunk: bytes) -> None:
        buffer = self.pending.setdefault(name, bytearray())
        buffer += chunk
        *lines, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest[:MAX_LINE]
        for line in lines:
            self._emit(line)

    def flush(self) -> None:
        for buffer in self.pending.values():
            self._emit(bytes(buffer))
        self.pending.clear()

    def _emit(self, line: bytes) -> None:
        text = line[:MAX_LINE].decode(errors="replace").rstrip("\r")
        if text.strip() and self.on_line is not None:
            self.on_line(text)


async def _pump(stream: asyncio.StreamReader | None, name: str, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(CHUNK):
        capture.add(name, chunk)
        if capture.over.is_set():
            return


async def _stop_requested(should_stop: Callable[[], bool]) -> None:
    while not should_stop():
        await asyncio.sleep(STOP_POLL)


async def isolated_run(
    spec: SandboxSpec,
    *,
    timeout: float,
    output_cap: int,
    on_line: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunOutcome:
    """Run ``spec`` isolated to its end (at most ``timeout`` s and ``output_cap`` bytes).

    ``on_line`` gets each non-empty output line (stdout and stderr interleaved as they
    come) while it runs; ``should_stop`` is polled and stops the run when true.
    """
    started = time.monotonic()
    proc = await spawn(spec)
    if proc.stdin is not None:
        proc.stdin.close()
    capture = _Capture(cap=output_cap, on_line=on_line)
    pumps = asyncio.gather(
        _pump(proc.stdout, "stdout", capture), _pump(proc.stderr, "stderr", capture)
    )
    waits = {
        "done": asyncio.ensure_future(_finished(proc, pumps)),
        "over": asyncio.ensure_future(capture.over.wait()),
    }
    if should_stop is not None:
        waits["stop"] = asyncio.ensure_future(_stop_requested(should_stop))
    try:
        done, _ = await asyncio.wait(
            waits.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in waits.values():
            task.cancel()
        code = await terminate_tree(proc, grace=KILL_GRACE)
        pumps.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumps
    capture.flush()
    clean = waits["done"] in done
    return RunOutcome(
        exit_code=code if clean else -1,
        stdout=capture.out.decode(errors="replace"),
        stderr=capture.err.decode(errors="replace"),
        timed_out=not done,
        truncated=capture.over.is_set(),
        stopped="stop" in waits and waits["stop"] in done,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


async def _finished(proc: asyncio.subprocess.Process, pumps: asyncio.Future[Any]) -> None:
    """The process exited and its output was read to the end."""
    await proc.wait()
    await pumps
