"""One JSON-RPC connection over a child's stdin/stdout, and its stderr.

The connection owns the byte level: reading and framing stdout, tapping stderr,
writing messages, matching responses to requests, answering the server's own
requests, and failing everything in flight when the server goes away. It knows
nothing of MCP's handshake or tools; :class:`~sandbox.mcp.client.McpClient` does.

Writes are serialised by construction: each message goes to the transport in one
``write`` call on the event loop's thread, so messages never interleave; ``drain``
only waits for the pipe to accept them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import McpClosed, McpError, McpProtocolError, McpServerExited, McpTimeout
from .framing import LineFramer, Oversized, decode_messages, encode_message
from .pending import PendingRequest, PendingTable
from .protocol import UNCANCELLABLE, answer_server_request
from .stderr import LineCallback, StderrTap

logger = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
NotificationCallback = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on what one server can make the connection hold or wait for."""

    max_message_bytes: int = 16 * 1024 * 1024
    stderr_ring_bytes: int = 64 * 1024
    stderr_lines_per_second: int = 20
    stderr_max_line_bytes: int = 4096
    exit_wait: float = 2.0  # after stdout closes: how long to wait for the exit status
    stderr_drain_wait: float = 0.5  # … and for the last stderr bytes
    close_wait: float = 1.0  # aclose: how long to wait for stdin to close


class Connection:
    """Newline-delimited JSON-RPC over already-started pipes (see module docstring)."""

    def __init__(
        self,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        *,
        stderr: asyncio.StreamReader | None = None,
        process: asyncio.subprocess.Process | None = None,
        limits: ConnectionLimits | None = None,
        on_stderr: LineCallback | None = None,
        on_notification: NotificationCallback | None = None,
    ) -> None:
        self.limits = limits or ConnectionLimits()
        self.stdin, self.stdout, self.stderr, self.process = stdin, stdout, stderr, process
        self.on_notification = on_notification
        self.tap = StderrTap(
            ring_bytes=self.limits.stderr_ring_bytes,
            on_line=on_stderr,
            lines_per_second=self.limits.stderr_lines_per_second,
            max_line_bytes=self.limits.stderr_max_line_bytes,
        )
        self.skipped_lines = 0  # stdout lines that were not JSON-RPC
        self.exit_code: int | None = None
        self.exited = False  # stdout closed and every request failed
        self.closing = False
        self._framer = LineFramer(self.limits.max_message_bytes)
        self._pending: PendingTable | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._exit_error: Callable[[str], McpError] | None = None

    @property
    def pending(self) -> PendingTable:
        """The open requests (the connection must be started)."""
        if self._pending is None:
            raise McpError("mcp: the client is not started")
        return self._pending

    def start(self) -> None:
        """Start reading stdout and stderr (needs a running loop; idempotent)."""
        if self._pending is not None:
            return
        self._pending = PendingTable(asyncio.get_running_loop())
        self._tasks.append(asyncio.create_task(self._read_stdout(), name="mcp-stdout"))
        if self.stderr is not None:
            self._tasks.append(asyncio.create_task(self._read_stderr(), name="mcp-stderr"))

    # -- writing ---------------------------------------------------------------------

    def open(
        self,
        method: str,
        params: dict[str, Any],
        *,
        idle: float,
        cap: float | None = None,
        progress: bool = False,
    ) -> PendingRequest:
        """Send a request now and register it; the caller awaits ``.future`` and must
        ``drop`` it. With ``progress``, the request id is its ``_meta.progressToken``."""
        self._check_open(method)
        request = self.pending.open(method, idle=idle, cap=cap)
        if progress:
            params = {**params, "_meta": {**params.get("_meta", {}), "progressToken": request.id}}
        self._write({"jsonrpc": "2.0", "id": request.id, "method": method, "params": params})
        return request

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        idle: float,
        cap: float | None = None,
        progress: bool = False,
    ) -> tuple[Any, int]:
        """Send a request and return ``(result, size of the answer in bytes)``.

        On expiry, or when the caller is cancelled, the server is sent
        ``notifications/cancelled`` for it.
        """
        request = self.open(method, params, idle=idle, cap=cap, progress=progress)
        try:
            await self._drain(idle)
            return await request.future, request.size
        except McpTimeout:
            self.cancel(request, "timed out")
            raise
        except asyncio.CancelledError:
            self.cancel(request, "abandoned by the client")
            raise
        finally:
            self.pending.drop(request)

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification (fire and forget)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._write(message)

    def send_untracked(self, method: str, params: dict[str, Any]) -> int:
        """Send a request whose answer nobody awaits (``subscriptions/listen``)."""
        self._check_open(method)
        request_id = self.pending.next_id()
        self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return request_id

    def cancel(self, request: PendingRequest, reason: str) -> None:
        """Tell the server to stop working on a request (never for the handshake)."""
        if request.method in UNCANCELLABLE or self.exited or self.closing:
            return
        self.notify("notifications/cancelled", {"requestId": request.id, "reason": reason})

    def _check_open(self, method: str) -> None:
        if self.closing:
            raise McpClosed(method)
        if self._exit_error is not None:
            raise self._exit_error(method)

    def _write(self, message: dict[str, Any]) -> None:
        try:
            self.stdin.write(encode_message(message))
        except (OSError, RuntimeError) as exc:  # the pipe is gone: the reader reports the exit
            logger.debug("mcp write failed: %s", exc)

    async def _drain(self, timeout: float) -> None:
        transport = self.stdin.transport
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            return
        # A server that stops reading stdin: the request's own timer settles it.
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self.stdin.drain()

    # -- reading ---------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        try:
            while chunk := await self.stdout.read(READ_SIZE):
                for frame in self._framer.feed(chunk):
                    try:
                        self._on_frame(frame)
                    except Exception:  # one bad message must not end the session
                        logger.exception("mcp: could not handle a message from the server")
        except (ConnectionError, OSError) as exc:
            logger.debug("mcp stdout read failed: %s", exc)
        await self._on_stdout_closed()

    async def _read_stderr(self) -> None:
        assert self.stderr is not None
        try:
            while chunk := await self.stderr.read(READ_SIZE):
                self.tap.feed(chunk)
        except (ConnectionError, OSError) as exc:
            logger.debug("mcp stderr read failed: %s", exc)
        self.tap.finish()

    def _on_frame(self, frame: bytes | Oversized) -> None:
        if isinstance(frame, Oversized):
            self._on_oversized(frame)
            return
        messages = decode_messages(frame)
        if not messages and frame.strip():
            self.skipped_lines += 1
        for message in messages:
            self._dispatch(message, len(frame))

    def _dispatch(self, message: dict[str, Any], size: int) -> None:
        method = message.get("method")
        if method is None:
            self.pending.resolve(message, size)
        elif "id" in message:
            self._answer(method, message["id"])
        else:
            params = message.get("params")
            self._on_notification(method, params if isinstance(params, dict) else {})

    def _answer(self, method: str, request_id: Any) -> None:
        result, error = answer_server_request(method)
        logger.info("mcp server asked %s; answered %s", method, "error" if error else "result")
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        reply.update({"error": error} if error is not None else {"result": result})
        self._write(reply)

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/progress":
            self.pending.progress(params.get("progressToken"))
        elif self.on_notification is not None:
            try:
                self.on_notification(method, params)
            except Exception:  # a broken callback must not stop the reader
                logger.exception("mcp notification callback failed for %s", method)

    def _on_oversized(self, frame: Oversized) -> None:
        request = self.pending.get(frame.request_id())
        limit = self.limits.max_message_bytes
        logger.warning("mcp message of %d bytes dropped (limit %d)", frame.size, limit)
        if request is not None:
            self.pending.fail(
                request,
                McpProtocolError(
                    f"mcp {request.method}: the answer is {frame.size} bytes, over the "
                    f"{limit} byte message limit"
                ),
            )

    # -- the end -----------------------------------------------------------------------

    async def _on_stdout_closed(self) -> None:
        code = await self._exit_status()
        if len(self._tasks) > 1:  # let the last stderr lines in, for the error message
            await asyncio.wait(self._tasks[1:], timeout=self.limits.stderr_drain_wait)
        tail = self.tap.tail()
        self.exit_code = code

        def make_error(method: str) -> McpError:
            return McpServerExited(method, code, stderr_tail=tail)

        self._exit_error = make_error
        self.exited = True
        self.pending.fail_all(make_error)

    async def _exit_status(self) -> int | None:
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), self.limits.exit_wait)
        except TimeoutError:
            return self.process.returncode

    async def aclose(self) -> None:
        """Fail what is in flight, close stdin and stop reading. The process itself is
        the owner's to stop (the host kills the whole sandbox)."""
        if self.closing:
            return
        self.closing = True
        if self._pending is not None:
            self._pending.fail_all(McpClosed)
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.stdin.close()
            async with asyncio.timeout(self.limits.close_wait):
                await self.stdin.wait_closed()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.limits.close_wait)
        self.tap.finish()
