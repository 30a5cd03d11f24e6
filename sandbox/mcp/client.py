"""The MCP client the sandbox host uses for each session.

It takes the pipes of an already-started server (the host starts it under bubblewrap)
and speaks MCP over them: the 2026-07-28 ``server/discover`` start with a fallback to
the ``initialize`` handshake, paginated ``tools/list`` with re-listing on
``list_changed``, and tool calls whose timeout progress can extend up to a hard cap.
Typical use::

    proc = await asyncio.create_subprocess_exec(*argv, stdin=PIPE, stdout=PIPE, stderr=PIPE)
    async with McpClient.from_process(proc, on_stderr=log_line) as client:
        info = await client.initialize(timeout=45)
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"message": "hi"}, timeout=20, hard_cap=120)

Every wait is bounded, every failure is an :class:`~sandbox.mcp.errors.McpError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .connection import Connection, ConnectionLimits, NotificationCallback
from .errors import McpError, McpProtocolError, McpRemoteError, McpServerExited, McpTimeout
from .pending import PendingRequest
from .protocol import (
    CLIENT_INFO,
    UNSUPPORTED_PROTOCOL_VERSION,
    ServerInfo,
    answer_server_request,
    initialize_params,
    modern_meta,
    server_info_from_discover,
    server_info_from_initialize,
)
from .stderr import LineCallback
from .tools import ListLimits, McpTool, ToolPager, same_tools

logger = logging.getLogger(__name__)

ToolsChangedCallback = Callable[[list[McpTool]], Awaitable[None] | None]
STATE_ONLY_RETRY_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Every bound the client applies, with defaults for a sandbox host."""

    connection: ConnectionLimits = field(default_factory=ConnectionLimits)
    tools_list: ListLimits = field(default_factory=ListLimits)
    discover_wait: float = 2.0  # a server silent on server/discover gets initialize after this
    relist_interval: float = 0.5  # coalesces a burst of list_changed into one tools/list
    relist_timeout: float = 20.0
    max_input_rounds: int = 10  # input_required retries of one tool call


class McpClient:
    """One MCP session over a server's stdio pipes (see module docstring).

    Callbacks run on the event loop and must not block: ``on_stderr(line)`` for each
    stderr line (rate-bounded), ``on_tools_changed(tools)`` after a re-list found a
    different list (may be async), ``on_notification(method, params)`` for any other
    server notification (``notifications/message`` logs, resource updates).
    """

    def __init__(
        self,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        *,
        stderr: asyncio.StreamReader | None = None,
        process: asyncio.subprocess.Process | None = None,
        on_stderr: LineCallback | None = None,
        on_tools_changed: ToolsChangedCallback | None = None,
        on_notification: NotificationCallback | None = None,
        limits: ClientLimits | None = None,
        client_info: dict[str, Any] | None = None,
    ) -> None:
        self.limits = limits or ClientLimits()
        self.conn = Connection(
            stdin,
            stdout,
            stderr=stderr,
            process=process,
            limits=self.limits.connection,
            on_stderr=on_stderr,
            on_notification=self._on_notification,
        )
        self.client_info = client_info or CLIENT_INFO
        self.server: ServerInfo | None = None
        self.tools: list[McpTool] | None = None
        self._on_tools_changed = on_tools_changed
        self._on_other_notification = on_notification
        self._meta: dict[str, Any] | None = None  # the 2026-07-28 envelope, once adopted
        self._changed_seq = 0  # list_changed notifications received
        self._listed_seq = 0  # … of which the current list accounts for
        self._relist_task: asyncio.Task[None] | None = None

    @classmethod
    def from_process(cls, process: asyncio.subprocess.Process, **kwargs: Any) -> McpClient:
        """A client on a process started with ``stdin=PIPE, stdout=PIPE`` (and, for the
        stderr tail and log lines, ``stderr=PIPE``)."""
        if process.stdin is None or process.stdout is None:
            raise ValueError("the MCP server needs stdin and stdout pipes")
        return cls(process.stdin, process.stdout, stderr=process.stderr, process=process, **kwargs)

    async def __aenter__(self) -> McpClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start reading the server's output (``initialize`` does it too)."""
        self.conn.start()

    @property
    def stderr_tail(self) -> str:
        """The last 64 KiB (by default) of the server's stderr."""
        return self.conn.tap.tail()

    @property
    def exit_code(self) -> int | None:
        """The server's exit status once it exited (``None`` before, or if unknown)."""
        return self.conn.exit_code

    @property
    def exited(self) -> bool:
        """Whether the server closed its stdout (every call now fails)."""
        return self.conn.exited

    async def aclose(self) -> None:
        """Fail calls in flight with :class:`McpClosed`, close stdin, stop the readers.
        Stopping the process is the owner's job."""
        if self._relist_task is not None:
            self._relist_task.cancel()
        await self.conn.aclose()

    # -- start ---------------------------------------------------------------------------

    async def initialize(self, *, timeout: float = 45.0) -> ServerInfo:
        """Set up the session: ``server/discover`` (2026-07-28), or ``initialize`` and
        ``notifications/initialized`` for servers that do not know it (they answer
        method-not-found, or nothing within ``limits.discover_wait``).

        Raises :class:`McpTimeout` after ``timeout`` s in all, :class:`McpServerExited`,
        :class:`McpRemoteError` when ``initialize`` is refused, and
        :class:`McpProtocolError` for a protocol version this client does not speak.
        """
        self.start()
        loop = asyncio.get_running_loop()
        try:
            info = await self._negotiate(loop.time() + timeout)
        except McpTimeout as exc:
            raise McpTimeout("initialize", timeout) from exc
        except McpServerExited as exc:  # name the step, not the request that was pending
            raise McpServerExited("initialize", exc.code, stderr_tail=exc.stderr_tail) from exc
        self.server = info
        if info.modern:
            self._meta = modern_meta(self.client_info)
            if info.tools_list_changed:
                self.conn.send_untracked("subscriptions/listen", self._listen_params())
        return info

    async def _negotiate(self, deadline: float) -> ServerInfo:
        loop = asyncio.get_running_loop()
        params = {"_meta": modern_meta(self.client_info)}
        discover = self.conn.open("server/discover", params, idle=deadline - loop.time())
        try:
            wait = min(self.limits.discover_wait, deadline - loop.time())
            done, _ = await asyncio.wait({discover.future}, timeout=max(wait, 0))
            if done:
                error = discover.future.exception()
                if error is not None and not isinstance(error, McpRemoteError):
                    raise error  # exited, closed, or out of time: no point in initialize
                info = self._discover_info(discover)
                if info is not None:
                    return info
            return await self._fall_back(discover, deadline)
        finally:
            self.conn.pending.drop(discover)

    def _discover_info(self, discover: PendingRequest) -> ServerInfo | None:
        """The modern session ``server/discover`` offers, or ``None`` (fall back)."""
        if discover.future.exception() is not None:
            return None
        return server_info_from_discover(discover.future.result())

    async def _fall_back(self, discover: PendingRequest, deadline: float) -> ServerInfo:
        """Send ``initialize`` and take whichever answer settles the era first: a
        discover answer that arrives late (a slow modern server, which then refuses
        the initialize with -32022) or the initialize result."""
        loop = asyncio.get_running_loop()
        init = self.conn.open(
            "initialize", initialize_params(self.client_info), idle=deadline - loop.time()
        )
        waiting = {init.future}
        if not discover.future.done():
            waiting.add(discover.future)
        try:
            while True:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if discover.future in done and (info := self._discover_info(discover)):
                    return info
                if init.future not in done:
                    continue
                error = init.future.exception()
                if error is None:
                    return self._initialized(init.future.result())
                if discover.future in waiting and _refused_version(error):
                    continue  # the late discover answer decides
                raise error
        finally:
            self.conn.pending.drop(init)

    def _initialized(self, result: Any) -> ServerInfo:
        info = server_info_from_initialize(result)
        if isinstance(info, str):
            raise McpProtocolError(f"mcp initialize: {info}")
        self.conn.notify("notifications/initialized")
        return info

    def _listen_params(self) -> dict[str, Any]:
        return {"_meta": self._meta, "notifications": {"toolsListChanged": True}}

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the 2026-07-28 envelope in ``_meta`` once that era is adopted."""
        return {**params, "_meta": dict(self._meta)} if self._meta is not None else params

    def _require_session(self, method: str) -> None:
        if self.server is None:
            raise McpError(f"mcp {method}: the session is not initialized")

    # -- tools -----------------------------------------------------------------------------

    async def list_tools(self, *, timeout: float = 20.0) -> list[McpTool]:
        """All the server's tools, following ``nextCursor`` (all pages within
        ``timeout``; page, tool and byte counts bounded by ``limits.tools_list``)."""
        self._require_session("tools/list")
        seq = self._changed_seq
        tools = await self._fetch_tools(timeout)
        self.tools, self._listed_seq = tools, max(self._listed_seq, seq)
        self._schedule_relist()
        return tools

    async def _fetch_tools(self, timeout: float) -> list[McpTool]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pager = ToolPager(self.limits.tools_list)
        cursor: str | None = None
        try:
            while True:
                params = self._params({"cursor": cursor} if cursor else {})
                idle = max(deadline - loop.time(), 0.0)
                result, size = await self.conn.request("tools/list", params, idle=idle)
                cursor = pager.add_page(result, size)
                if cursor is None:
                    return pager.tools
        except McpTimeout as exc:
            raise McpTimeout("tools/list", timeout) from exc

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float = 20.0,
        hard_cap: float = 120.0,
    ) -> dict[str, Any]:
        """Call a tool and return the raw MCP result (``{"content": [...], "isError":
        …}``; a tool-level failure is a result, not an exception).

        The call expires after ``timeout`` s without an answer; each
        ``notifications/progress`` for it restarts that clock, but never past
        ``hard_cap`` s from the start. On expiry the server gets
        ``notifications/cancelled`` and :class:`McpTimeout` is raised. On 2026-07-28
        servers, ``input_required`` results are answered (empty roots, declined
        elicitation; sampling is refused) and the call retried, at most
        ``limits.max_input_rounds`` times.
        """
        self._require_session("tools/call")
        cap = asyncio.get_running_loop().time() + hard_cap
        params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
        try:
            result = await self._call_once(params, timeout, cap)
            for _ in range(self.limits.max_input_rounds):
                if result.get("resultType") != "input_required":
                    return _complete(result)
                result = await self._call_once(await _input_round(params, result), timeout, cap)
        except McpTimeout as exc:
            seconds = hard_cap if exc.hard_cap else timeout
            raise McpTimeout("tools/call", seconds, hard_cap=exc.hard_cap) from None
        raise McpProtocolError(
            f"mcp tools/call: still input_required after {self.limits.max_input_rounds} rounds"
        )

    async def _call_once(
        self, params: dict[str, Any], timeout: float, cap: float
    ) -> dict[str, Any]:
        wire = self._params(params)
        result, _ = await self.conn.request(
            "tools/call", wire, idle=timeout, cap=cap, progress=True
        )
        if not isinstance(result, dict):
            raise McpProtocolError("mcp tools/call: the result is not an object")
        return result

    # -- list_changed --------------------------------------------------------------------------

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/tools/list_changed":
            self._changed_seq += 1
            self._schedule_relist()
        elif self._on_other_notification is not None:
            self._on_other_notification(method, params)

    def _schedule_relist(self) -> None:
        """Re-list in the background when a list_changed came after the last listing
        (not before the first one: that listing is the host's)."""
        if self.tools is None or self.conn.closing or self.conn.exited:
            return
        if self._changed_seq == self._listed_seq or self._relist_task is not None:
            return
        self._relist_task = asyncio.create_task(self._relist(), name="mcp-relist")

    async def _relist(self) -> None:
        try:
            while self._changed_seq != self._listed_seq:
                await asyncio.sleep(self.limits.relist_interval)
                seq = self._changed_seq
                tools = await self._fetch_tools(self.limits.relist_timeout)
                self._listed_seq = seq
                if self.tools is not None and not same_tools(self.tools, tools):
                    self.tools = tools
                    await self._tools_changed(tools)
        except McpError as exc:  # the next list_changed tries again
            logger.warning("mcp re-list after list_changed failed: %s", exc)
        finally:
            self._relist_task = None

    async def _tools_changed(self, tools: list[McpTool]) -> None:
        if self._on_tools_changed is None:
            return
        try:
            outcome = self._on_tools_changed(tools)
            if inspect.isawaitable(outcome):
                await asyncio.wait_for(outcome, self.limits.relist_timeout)
        except Exception:  # the host's callback failing must not end the session
            logger.exception("mcp tools-changed callback failed")


def _refused_version(error: BaseException) -> bool:
    return isinstance(error, McpRemoteError) and error.code == UNSUPPORTED_PROTOCOL_VERSION


def _complete(result: dict[str, Any]) -> dict[str, Any]:
    kind = result.get("resultType", "complete")
    if kind != "complete":
        raise McpProtocolError(f"mcp tools/call: unknown resultType {kind!r}")
    return result


async def _input_round(params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The retry of a call that came back ``input_required``: answers to its input
    requests, and its ``requestState`` echoed back unchanged."""
    requests = result.get("inputRequests") or {}
    if not isinstance(requests, dict):
        raise McpProtocolError("mcp tools/call: inputRequests is not an object")
    retry = dict(params)
    if requests:
        retry["inputResponses"] = {key: _input_response(req) for key, req in requests.items()}
    else:  # state only: the server is still working; do not spin
        await asyncio.sleep(STATE_ONLY_RETRY_DELAY)
    if isinstance(result.get("requestState"), str):
        retry["requestState"] = result["requestState"]
    return retry


def _input_response(request: Any) -> dict[str, Any]:
    method = request.get("method") if isinstance(request, dict) else None
    answer, error = answer_server_request(str(method))
    if error is not None or answer is None:
        reason = error["message"] if error else "no answer"
        raise McpProtocolError(
            f"mcp tools/call: the tool needs {method}, which is refused ({reason})"
        )
    return answer
