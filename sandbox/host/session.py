"""One live session in a sandbox host: start its server, keep it, answer calls, end it.

:meth:`LiveSession.run` is the session's whole life as one asyncio task. Its body
emits the original's start events (``validate``, ``sandbox``, ``mcp_start``,
``mcp_initialize``, ``tools_list``, ``ready``), spawns the server isolated, and then
either serves until the server exits (``mcp.test``, ``mcp.run``) or calls one tool
(``tool.run``). :meth:`LiveSession.stop` (TTL, DELETE, host shutdown) cancels the body
and its status wins over whatever the body was doing, as the original's context did
(start events and stop status: docs/COMPATIBILITY.md#c-09).
Afterwards the server is stopped (stdin closed, a short wait, then the whole process
group), the scratch dir deleted, and the job finished with exactly one status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone
from pydantic import ValidationError

from accounts.principals import Actor
from jobs.choices import JobStatus
from matrixcloud.errors import ApplicationError
from sandbox.bubblewrap import sandbox_sees
from sandbox.choices import CallFailure
from sandbox.egress import EgressRefused
from sandbox.egress.catalog import session_allow
from sandbox.egress.runner import EgressStartError, SessionProxy
from sandbox.handlers import McpServerParams, ToolRunParams
from sandbox.host import records
from sandbox.host.calls import REFUSED, call_entry, failure, tool_call
from sandbox.host.install import InstallFailed, PackageInstall, host_paths, unseen_path_message
from sandbox.host.logs import LogPump
from sandbox.host.recorder import CallRecorder
from sandbox.host.records import Claimed, Event
from sandbox.isolation import (
    TIER_BUBBLEWRAP,
    SandboxSpec,
    isolation_tier,
    scratch_owner,
    scratch_prepare,
    spawn,
    terminate_tree,
)
from sandbox.mcp import McpClient, McpError, McpTool, ServerInfo
from sandbox.policy import resolve_env
from sandbox.prefetch import PrefetchRefused, cached_argv, check_allowed, wanted_package
from sandbox.quota import quota_mount, quota_unmount
from sandbox.secrets import resolve_secret

logger = logging.getLogger(__name__)

STDIN_GRACE = 0.5  # after closing stdin, how long a server gets to exit by itself
KILL_GRACE = 0.5  # terminate_tree's wait between TERM and KILL
EXIT_CHECK = 1.0  # how often a served session looks for a server that closed stdout
EXIT_NOTICE_WAIT = 3.0  # … and how long it waits for the client to see the exit
SPAWN_WAIT = 15.0  # a cancelled session still waits this long for a spawn in progress
STDERR_IN_MESSAGE = 4000
EGRESS_EVENTS_CAP = 100  # refused connections listed as events; past it, only counted


class SessionFailed(Exception):
    """The session cannot go on: ``step`` failed with ``message`` (the job's error)."""

    def __init__(self, step: str, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.stderr = stderr


def with_stderr(message: str, stderr: str) -> str:
    """``message (stderr: <tail>)``, as the original's start errors read.

    Kept on purpose: docs/COMPATIBILITY.md#c-09.
    """
    tail = stderr.strip()[-STDERR_IN_MESSAGE:]
    return f"{message} (stderr: {tail})" if tail else message


@dataclass
class Ending:
    """How the session ends: its terminal status and what goes with it."""

    status: str
    result: Any = None
    error: str = ""
    events: list[Event] = field(default_factory=list)


class LiveSession:
    """One claimed session job, from its first event to its terminal one."""

    def __init__(
        self, claimed: Claimed, *, on_end: Callable[[str], None], recorder: CallRecorder
    ) -> None:
        self.job = claimed.job
        self.session = claimed.session
        self.handler = claimed.handler
        self.problem = claimed.problem
        self.job_id = claimed.job.pk
        self.scratch = Path(settings.MATRIX_DATA_DIR) / "mcp" / self.job_id
        self.proc: asyncio.subprocess.Process | None = None
        self.client: McpClient | None = None
        self.ready = asyncio.Event()
        self.stopped: tuple[str, str] | None = None
        self.ending = False
        self.logs = LogPump(self.job_id)
        self._on_end = on_end
        self.recorder = recorder
        self._body: asyncio.Task[Ending] | None = None
        self.egress: SessionProxy | None = None
        self.egress_denials = 0
        self.task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name=f"session-{self.job_id}")
        self.task.add_done_callback(lambda _: self._on_end(self.job_id))
        return self.task

    def stop(self, status: str, note: str = "") -> None:
        """End the session with ``status`` (expired or cancelled), ``note`` shown in a
        ``stop`` event before the terminal one. The first stop wins."""
        if self.stopped is None:
            self.stopped = (status, note)
        if self._body is not None and not self._body.done():
            self._body.cancel()

    async def run(self) -> None:
        """The whole life: body under the TTL, then teardown and exactly one finish."""
        loop = asyncio.get_running_loop()
        ttl_left = (self.job.expires_at - timezone.now()).total_seconds()
        timer = loop.call_later(max(ttl_left, 0), self.stop, JobStatus.EXPIRED)
        self._body = asyncio.create_task(self._run_body(), name=f"session-body-{self.job_id}")
        try:
            await asyncio.wait({self._body})
        finally:
            timer.cancel()
            self._body.cancel()
            ending = self._ending(self._body)
            await self._teardown()
            await self._finish(ending)

    def _ending(self, body: asyncio.Task[Ending]) -> Ending:
        if self.stopped is not None:  # the context wins over what the body was doing
            status, note = self.stopped
            return Ending(status, events=[("stop", status, note, None)] if note else [])
        if body.cancelled():
            return Ending(JobStatus.CANCELLED)
        error = body.exception()
        if isinstance(error, SessionFailed):
            data = {"stderr": error.stderr.strip()[-STDERR_IN_MESSAGE:]} if error.stderr else None
            step_event: Event = (error.step, "error", error.message, data)
            message = with_stderr(error.message, error.stderr)
            return Ending(JobStatus.ERROR, error=message, events=[step_event])
        if error is not None:
            logger.error("session %s crashed", self.job_id, exc_info=error)
            return Ending(JobStatus.ERROR, error=f"internal error: {type(error).__name__}: {error}")
        return body.result()

    async def _finish(self, ending: Ending) -> None:
        try:
            await records.run(
                records.session_finish,
                self.job_id,
                self.session.pk if self.session else None,
                ending.status,
                result=ending.result,
                error=ending.error,
                events=ending.events,
            )
        except Exception:  # the janitor ends a job whose host stopped heart-beating
            logger.exception("could not finish session job %s", self.job_id)

    async def _teardown(self) -> None:
        """Stop the server (stdin first: under bubblewrap TERM kills at once), the log
        stream and the scratch dir. Bounded by the graces above."""
        self.ending = True
        self.ready.clear()
        if self.client is not None:
            await self.client.aclose()
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), STDIN_GRACE)
            await terminate_tree(self.proc, grace=KILL_GRACE)
        if self.egress is not None:
            await self.egress.stop()
        await self.logs.close()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            await asyncio.to_thread(quota_unmount, self.scratch)
        await asyncio.to_thread(shutil.rmtree, self.scratch, True)

    # -- the body --------------------------------------------------------------------

    async def _run_body(self) -> Ending:
        if self.problem or self.session is None or self.handler is None:
            raise SessionFailed("validate", self.problem or "the session could not be set up")
        params = self._params()
        await self._emit(("validate", "ok", "Command accepted", {"program": self.session.argv[0]}))
        env = await self._resolve_env(params)
        await asyncio.to_thread(self._prepare_scratch)
        argv = self.session.argv
        cached = await asyncio.to_thread(cached_argv, argv)  # npx/uvx of a prefetched package
        if cached is None:
            cached = await self._install(params, argv)
        await asyncio.to_thread(self._paths_check, cached or argv)
        await self._emit(
            ("sandbox", "start", "Creating temporary sandbox", {"work_dir": str(self.scratch)}),
            (
                "mcp_start",
                "start",
                "Starting MCP server",
                {"from_cache": cached} if cached else None,
            ),
        )
        await self._launch(params, env, cached or argv)
        drive = getattr(self.handler, "drive", None)
        if drive is not None:  # agent.run: its handler uses the ready session, then it ends
            return Ending(JobStatus.COMPLETE, result=await drive(self, params))
        if isinstance(params, ToolRunParams) and self.handler.one_shot:
            return Ending(JobStatus.COMPLETE, result=await self._call_once(params))
        await self._serve()
        raise AssertionError("unreachable: _serve only ends by raising")

    def _params(self) -> McpServerParams:
        assert self.handler is not None
        try:
            params = self.handler.Params.model_validate(self.job.payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "payload"
            raise SessionFailed("validate", f"invalid payload: {where}: {first['msg']}") from exc
        assert isinstance(params, McpServerParams)
        return params

    async def _resolve_env(self, params: McpServerParams) -> dict[str, str]:
        # The creator's role now decides (it may have changed since the creation check).
        workspace_id, creator = self.job.workspace_id, self.job.created_by_id

        def resolve() -> dict[str, str]:
            actor = Actor.job_creator(workspace_id, creator)
            return resolve_env(params.env, lambda name: resolve_secret(actor, name))

        try:
            return await records.run(resolve)
        except ApplicationError as exc:
            raise SessionFailed("validate", exc.message) from exc

    def _prepare_scratch(self) -> None:
        """The scratch dir, on a file system of the disk quota where the host can."""
        tier = isolation_tier()
        try:
            scratch_prepare(self.scratch, tier=tier)
            quota_mount(self.scratch, owner=scratch_owner(tier))
        except (OSError, subprocess.SubprocessError) as exc:
            raise SessionFailed("sandbox", f"create sandbox dir: {exc}") from exc

    async def _install(self, params: McpServerParams, argv: list[str]) -> list[str] | None:
        """Install the package an ``npx``/``uvx``/``pipx run`` command runs into the
        prefetch cache, as the session's ``install`` step; the argv that starts it from
        there. None (the command runs as written) for any other command, and for a
        package off the allow-list in a session that has the network to fetch it."""
        wanted = wanted_package(argv)
        if wanted is None:
            return None
        installer = PackageInstall(wanted, emit=self._emit)
        try:
            check_allowed(wanted.spec)
        except PrefetchRefused:
            if params.allow_network:
                return None
            raise SessionFailed("install", installer.refusal()) from None
        try:
            return await installer.run(argv)
        except InstallFailed as exc:
            raise SessionFailed("install", str(exc)) from exc

    def _paths_check(self, argv: list[str]) -> None:
        """A host path the command names must be one the sandbox sees (else the server
        fails later with a bare "not found")."""
        if isolation_tier() != TIER_BUBBLEWRAP:
            return
        for path in host_paths(argv):
            binds = settings.MATRIX_SANDBOX_RO_BINDS
            if not sandbox_sees(path, scratch=self.scratch, ro_binds=binds):
                raise SessionFailed("validate", unseen_path_message(path))

    async def _launch(self, params: McpServerParams, env: dict[str, str], argv: list[str]) -> None:
        """Spawn the server isolated, set up MCP, list the tools, store them: ready."""
        assert self.session is not None
        egress = await self._egress_start(params)
        spec = SandboxSpec(
            argv=argv,
            scratch_dir=self.scratch,
            env=env,
            allow_network=params.allow_network,
            ro_binds=tuple(settings.MATRIX_SANDBOX_RO_BINDS),
            egress_socket=egress.socket if egress is not None else None,
        )
        started = time.perf_counter()
        self.proc = await self._spawn(spec)
        spawned = time.perf_counter()
        self.client = McpClient.from_process(
            self.proc, on_stderr=self.logs.line, on_tools_changed=self._tools_changed
        )
        server, tools = await self._handshake()
        timings = {
            "spawn_ms": round((spawned - started) * 1000, 1),
            "handshake_ms": round((time.perf_counter() - spawned) * 1000, 1),
        }
        await self._mark_ready(server, tools, timings)

    async def _egress_start(self, params: McpServerParams) -> SessionProxy | None:
        """The session's egress proxy, when it has an allowlist (its catalog entry's and
        its request's) and no open network; None otherwise. Only bubblewrap's network
        namespace makes the proxy the one route out, so only there is one started."""
        assert self.session is not None
        if params.allow_network:
            return None
        try:
            allow = session_allow(self.session.argv, params.network_allow)
        except EgressRefused as exc:
            raise SessionFailed("sandbox", exc.message) from exc
        if not allow or isolation_tier() != TIER_BUBBLEWRAP:
            return None
        self.egress = SessionProxy(allow, on_denied=self._egress_denied)
        try:
            await self.egress.start()
        except EgressStartError as exc:
            raise SessionFailed("sandbox", str(exc)) from exc
        await records.run(records.session_egress, self.session.pk, allow=allow)
        message = f"Network: allowlist through the egress proxy ({', '.join(allow)})"
        await self._emit(("egress", "ok", message, {"mode": "allowlist", "allow": allow}))
        return self.egress

    async def _egress_denied(self, decision: dict[str, Any]) -> None:
        """One refused connection: counted on the row, and an event (up to a cap)."""
        assert self.session is not None
        self.egress_denials += 1
        host, port = str(decision.get("host", "")), int(decision.get("port") or 0)
        event: Event | None = None
        if self.egress_denials <= EGRESS_EVENTS_CAP:
            reason = str(decision.get("reason", ""))
            data = {"host": host, "port": port, "reason": reason, "count": self.egress_denials}
            event = ("egress_denied", "denied", f"Egress to {host}:{port} refused: {reason}", data)
        elif self.egress_denials == EGRESS_EVENTS_CAP + 1:
            note = f"More than {EGRESS_EVENTS_CAP} refused connections: further ones are counted"
            event = ("egress_denied", "denied", note, {"count": self.egress_denials})
        await records.run(
            records.session_egress_denied, self.session.pk, self.job_id, count=1, event=event
        )

    async def _spawn(self, spec: SandboxSpec) -> asyncio.subprocess.Process:
        """``spawn`` shielded: a stop during it still gets the process, to kill it."""
        task = asyncio.ensure_future(spawn(spec))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self.proc = await asyncio.wait_for(asyncio.shield(task), SPAWN_WAIT)
            raise
        except (OSError, ValueError, ApplicationError) as exc:
            raise SessionFailed("mcp_start", f"start mcp server: {exc}") from exc

    async def _handshake(self) -> tuple[ServerInfo, list[McpTool]]:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.MATRIX_SANDBOX_START_TIMEOUT
        step = "mcp_initialize"
        try:
            server = await self.client.initialize(timeout=settings.MATRIX_SANDBOX_START_TIMEOUT)
            step = "tools_list"
            tools = await self.client.list_tools(timeout=max(deadline - loop.time(), 0.1))
        except McpError as exc:
            raise SessionFailed(
                step, f"mcp handshake failed: {exc}", stderr=self.client.stderr_tail
            ) from exc
        return server, tools

    async def _mark_ready(
        self, server: ServerInfo, tools: list[McpTool], timings: dict[str, float]
    ) -> None:
        """Store the tools and emit the last start events; ``timings`` (the sandbox's
        spawn, the server's own start to its tools listed) go in ``mcp_initialize``."""
        assert self.session is not None
        described = {
            "protocol_version": server.protocol_version,
            "server": server.as_dict()["server"],
        }
        # Ready here first: once the row says ready, a call may arrive at any moment (the
        # web sends none before), and it must not find the session still starting.
        self.ready.set()
        await records.run(
            records.session_ready,
            self.session.pk,
            tools=[tool.to_contract() for tool in tools],
            fingerprints={tool.name: tool.fingerprint for tool in tools},
            server=described,
            events=[
                ("mcp_initialize", "ok", "MCP initialize succeeded", {**described, **timings}),
                ("tools_list", "ok", f"Found {len(tools)} tools", {"count": len(tools)}),
                ("ready", "ok", "Sandbox ready", None),
            ],
        )

    async def _tools_changed(self, tools: list[McpTool]) -> None:
        assert self.session is not None
        await records.run(
            records.session_tools_changed,
            self.session.pk,
            tools=[tool.to_contract() for tool in tools],
            fingerprints={tool.name: tool.fingerprint for tool in tools},
        )

    async def _serve(self) -> None:
        """Hold the server until it exits by itself (a stop cancels this wait)."""
        assert self.proc is not None
        assert self.client is not None
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            while not exited.done() and not self.client.exited:
                await asyncio.wait({exited}, timeout=EXIT_CHECK)
        finally:
            exited.cancel()
        for _ in range(int(EXIT_NOTICE_WAIT / 0.05)):  # let the last stderr lines in
            if self.client.exited:
                break
            await asyncio.sleep(0.05)
        code = self.proc.returncode if self.proc.returncode is not None else self.client.exit_code
        raise SessionFailed(
            "mcp_server",
            f"mcp server exited unexpectedly (code {code})",
            stderr=self.client.stderr_tail,
        )

    async def _call_once(self, params: ToolRunParams) -> dict[str, Any]:
        """``tool.run``: call the one tool, record it, return ``{"result": ...}``."""
        await self._emit(("tool_call", "start", f"Calling tool {params.tool}", None))
        creator = self.job.created_by_id
        caller = {"actor": creator or "operator", "user_id": creator, "ip": ""}
        reply = await self.call(params.tool, params.arguments, caller=caller)
        if not reply["ok"]:
            raise SessionFailed("tool_call", f"tool call failed: {reply['error']}")
        data = {"duration_ms": reply["duration_ms"], "is_error": reply["outcome"] != "ok"}
        await self._emit(("tool_call", "ok", f"Tool {params.tool} answered", data))
        return {"result": reply["result"]}

    # -- calls -----------------------------------------------------------------------

    async def call(self, name: str, arguments: Any, *, caller: dict[str, Any]) -> dict[str, Any]:
        """Call a tool; the ``sandbox.reply`` body. The call is queued for recording."""
        started_at = timezone.now()
        if self.stopped is not None or self.ending:
            reply = failure(CallFailure.ENDED, "sandbox session has ended", REFUSED)
        elif not self.ready.is_set() or self.client is None:
            reply = failure(CallFailure.NOT_READY, "sandbox not ready", REFUSED)
        else:
            reply = await tool_call(self.client, name, arguments)
        if self.session is not None:
            reply["recorded"] = True
            self.recorder.add(call_entry(self.session, name, arguments, caller, started_at, reply))
        return reply

    async def _emit(self, *events: Event) -> None:
        await records.run(records.events_emit, self.job_id, list(events))
