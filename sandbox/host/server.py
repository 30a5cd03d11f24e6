"""The sandbox host process: many live sessions in one asyncio loop, reached over the bus.

It consumes the shared ``sandbox.start`` channel (the bus hands each message to one
host) while it has room, and its own reply channel, which it records as ``Job.runner``
when it claims a job (claims are conditional, so two hosts never run one job). On its
channel it takes ``sandbox.stop``; tool calls from web processes arrive only in its
mailbox, the Redis list named after that channel (sandbox/rpc.py), and are answered on
each call's reply list (a ``sandbox.call`` sent on the channel is refused).
A watch loop heart-beats its sessions' jobs and stops the ones that were cancelled or
ended elsewhere; a sweep picks up session jobs whose start message was lost. On
shutdown every session is stopped (cancelled, saying the host stopped), the calls left
in the mailbox are answered, and no server process is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django import db
from django.conf import settings

from jobs.choices import JobStatus, ProcessRole
from jobs.dispatchers import SESSION_START_CHANNEL
from jobs.heartbeats import new_instance_id, process_heartbeat_beat, process_heartbeat_stop
from matrixcloud.lib.backoff import Backoff
from sandbox.choices import CallFailure, ToolCallOutcome
from sandbox.host import records
from sandbox.host.calls import failure
from sandbox.host.mailbox import Mailbox
from sandbox.host.recorder import CallRecorder
from sandbox.host.session import LiveSession
from sandbox.isolation import isolation_tier, limits_leftovers_remove
from sandbox.rpc import REPLY_TYPE

logger = logging.getLogger(__name__)

START_CHANNEL = SESSION_START_CHANNEL
STOP_TYPE = "sandbox.stop"
START_TYPE = "sandbox.start"
RECEIVE_TIMEOUT = 1.0
# After a bus error: retry after 0.5 s, doubling to at most 2 s (a reconnect attempt is
# cheap; with 10 s the host came back up to 10 s after the bus did).
BUS_RETRY = 0.5
BUS_RETRY_MAX = 2.0
WATCH_SECONDS = 1.0  # cancel requests are seen this fast even if the stop message is lost
JOB_HEARTBEAT_SECONDS = 2.0
SWEEP_SECONDS = 5.0
LOST_START_AFTER = timedelta(seconds=3)
FULL_PAUSE = 0.5
SHUTDOWN_WAIT = 20.0
Reply = Callable[[dict[str, Any]], Awaitable[None]]


class SandboxHost:
    """One sandbox host: its heartbeat row, its two channels, its live sessions.

    ``run(stop)`` returns soon after ``stop`` is set: every receive is bounded, every
    session is stopped and finished, and the heartbeat row is marked stopped.
    """

    def __init__(
        self, *, layer: BaseChannelLayer | None = None, interval: float = 0, capacity: int = 0
    ) -> None:
        self.layer: Any = layer or get_channel_layer()
        self.interval = interval or settings.MATRIX_HEARTBEAT_SECONDS
        self.capacity = capacity or settings.MATRIX_SANDBOX_HOST_CAPACITY
        self.instance = new_instance_id(ProcessRole.SANDBOX_HOST)
        self.reply_channel = ""
        self.sessions: dict[str, LiveSession] = {}
        self._starting: set[str] = set()
        self._requests: set[asyncio.Task[None]] = set()
        self.mailbox: Mailbox | None = None
        self.recorder = CallRecorder()

    @property
    def full(self) -> bool:
        return len(self.sessions) + len(self._starting) >= self.capacity

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(isolation_tier)  # probes bwrap once, off the loop
        await asyncio.to_thread(limits_leftovers_remove)  # what a crashed host left
        self.reply_channel = await self.layer.new_channel()
        self.mailbox = Mailbox(self.reply_channel) if settings.REDIS_URL else None
        await self._beat({"reply_channel": self.reply_channel, "capacity": self.capacity})
        logger.info("sandbox host listening on %s and %s", START_CHANNEL, self.reply_channel)
        tasks = [
            asyncio.create_task(self._listen(START_CHANNEL, stop, starts=True)),
            asyncio.create_task(self._listen(self.reply_channel, stop)),
            asyncio.create_task(self._take_calls(stop)),
            asyncio.create_task(self._every(self.interval, self._beat, stop)),
            asyncio.create_task(self._watch(stop)),
            asyncio.create_task(self._every(SWEEP_SECONDS, self._sweep, stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_sessions()
            await self._close_mailbox()
            await self._shutdown()

    # -- messages ----------------------------------------------------------------------

    async def handle(self, message: dict[str, Any]) -> None:
        """Act on one bus message (never blocks on a tool call: calls run as tasks)."""
        kind = message.get("type")
        job_id = message.get("job_id")
        if kind == START_TYPE and isinstance(job_id, str):
            await self.session_start(job_id)
        elif kind == STOP_TYPE and isinstance(job_id, str):
            if (session := self.sessions.get(job_id)) is not None:
                session.stop(JobStatus.CANCELLED)
        else:
            await self._refuse(message)

    def _call_later(self, message: dict[str, Any], reply: Reply) -> None:
        """Answer a ``sandbox.call`` in a task of its own (calls never block the loop's
        other work, and several on one session run at once)."""
        task = asyncio.create_task(self._answer_call(message, reply), name="sandbox-call")
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _refuse(self, message: dict[str, Any]) -> None:
        """Answer a request this host cannot act on, so its caller is not left waiting."""
        reply_to = message.get("reply_channel")
        if not isinstance(reply_to, str) or not reply_to:
            logger.warning("ignoring a %r message without a job id", message.get("type"))
            return
        error = f"unsupported request {message.get('type')!r} (or no job_id)"
        try:
            await self._reply(reply_to, message, {"ok": False, "kind": "refused", "error": error})
        except Exception:
            logger.warning("could not refuse a request on %s", reply_to, exc_info=True)

    async def _answer_call(self, message: dict[str, Any], reply: Reply) -> None:
        session = self.sessions.get(str(message.get("job_id")))
        if session is None:
            body = failure(CallFailure.ENDED, "sandbox session has ended", ToolCallOutcome.REFUSED)
        else:
            caller = message.get("caller")
            caller = caller if isinstance(caller, dict) else {}
            name, arguments = str(message.get("name") or ""), message.get("arguments") or {}
            body = await session.call(name, arguments, caller=caller)
        try:
            await reply(body)
        except Exception:  # the caller times out and says so
            logger.warning("could not reply to a call of %s", message.get("job_id"), exc_info=True)

    async def _take_calls(self, stop: asyncio.Event) -> None:
        """Take tool calls from this host's mailbox (sandbox/rpc.py) until ``stop``."""
        mailbox = self.mailbox
        if mailbox is None:
            return
        retry = Backoff(BUS_RETRY, BUS_RETRY_MAX)
        while not stop.is_set():
            try:
                message = await mailbox.take()
            except Exception as exc:  # the bus may be restarting: say so, wait, try again
                logger.warning("bus error on the call mailbox (%r); retrying", exc)
                await asyncio.sleep(next(retry))
                continue
            retry.reset()
            if message is not None:
                self._call_later(message, partial(mailbox.reply, message))

    async def _close_mailbox(self) -> None:
        """Answer the calls still waiting (``ended``), then let go of the bus client."""
        if self.mailbox is None:
            return
        ended = failure(CallFailure.ENDED, "sandbox session has ended", ToolCallOutcome.REFUSED)
        try:
            for message in await asyncio.wait_for(self.mailbox.drain(), RECEIVE_TIMEOUT):
                await self.mailbox.reply(message, ended)
        except Exception:
            logger.warning("could not answer the calls left in the mailbox", exc_info=True)
        await self.mailbox.close()

    async def _reply(self, channel: str, message: dict[str, Any], body: dict[str, Any]) -> None:
        """Answer a channel-layer request on its ``reply_channel``."""
        reply = {"type": REPLY_TYPE, **body}
        if "request_id" in message:
            reply["request_id"] = message["request_id"]
        await self.layer.send(channel, reply)

    # -- sessions ----------------------------------------------------------------------

    async def session_start(self, job_id: str) -> None:
        """Claim ``job_id`` for this host and run its session (a no-op if another host
        or an earlier message got it first)."""
        if job_id in self.sessions or job_id in self._starting:
            return
        self._starting.add(job_id)
        try:
            claimed = await records.run(records.session_claim, job_id, runner=self.reply_channel)
            if claimed is not None:
                session = LiveSession(claimed, on_end=self._ended, recorder=self.recorder)
                self.sessions[job_id] = session
                session.start()
        except Exception:  # the sweep (or the janitor, at the TTL) tries again
            logger.exception("could not start session job %s", job_id)
        finally:
            self._starting.discard(job_id)

    def _ended(self, job_id: str) -> None:
        self.sessions.pop(job_id, None)

    async def _stop_sessions(self) -> None:
        """Stop every session as cancelled, saying why, and wait for them to finish."""
        note = f"Sandbox host stopped ({self.instance}); the session was stopped with it"
        live = list(self.sessions.values())
        for session in live:
            session.stop(JobStatus.CANCELLED, note)
        tasks = {session.task for session in live if session.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT)
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=RECEIVE_TIMEOUT)
        await self.recorder.close()

    # -- loops ---------------------------------------------------------------------------

    async def _listen(self, channel: str, stop: asyncio.Event, *, starts: bool = False) -> None:
        retry = Backoff(BUS_RETRY, BUS_RETRY_MAX)
        while not stop.is_set():
            if starts and self.full:  # leave start messages to hosts with room
                await asyncio.sleep(FULL_PAUSE)
                continue
            try:
                message = await asyncio.wait_for(self.layer.receive(channel), RECEIVE_TIMEOUT)
                await self.handle(message)
            except TimeoutError:
                pass
            except Exception as exc:  # the bus may be restarting: say so, wait, try again
                delay = next(retry)
                logger.warning("bus error on %s (%r); retrying in %.0f s", channel, exc, delay)
                await asyncio.sleep(delay)
                continue
            retry.reset()

    async def _every(self, seconds: float, action: Any, stop: asyncio.Event) -> None:
        """``action`` every ``seconds`` until ``stop``; a round that fails is logged and
        the next one runs (these loops live as long as the host)."""
        while not stop.is_set():
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:
                logger.exception("%s failed; again in %s s", action.__name__, seconds)

    async def _watch(self, stop: asyncio.Event) -> None:
        """Heart-beat the sessions' jobs; stop those cancelled or ended elsewhere.

        It must outlive every failed round: without its heartbeats the sessions of this
        host are refused calls after a few seconds and ended by the janitor after 20.
        A database that went away fails a round; ``records.run`` has then dropped the
        connection (on the database thread, the only one that may touch it), and the
        next round connects again.
        """
        last_beat = 0.0
        while not stop.is_set():
            await asyncio.sleep(WATCH_SECONDS)
            beat = time.monotonic() - last_beat >= JOB_HEARTBEAT_SECONDS
            try:
                states = await records.run(records.sessions_watch, list(self.sessions), beat=beat)
            except Exception:  # a database hiccup: the next round tries again
                logger.warning("session watch failed", exc_info=True)
                continue
            last_beat = time.monotonic() if beat else last_beat
            for job_id, should_stop in states.items():
                if should_stop and (session := self.sessions.get(job_id)) is not None:
                    session.stop(JobStatus.CANCELLED)

    async def _sweep(self) -> None:
        """Start session jobs whose start message no host received."""
        if self.full:
            return
        room = self.capacity - len(self.sessions) - len(self._starting)
        try:
            lost = await records.run(
                records.queued_sessions, older_than=LOST_START_AFTER, limit=min(room, 20)
            )
        except Exception:
            logger.warning("sweep for lost session starts failed", exc_info=True)
            return
        for job_id in lost:
            await self.session_start(job_id)

    async def _beat(self, meta: dict[str, Any] | None = None) -> None:
        meta = meta or {"reply_channel": self.reply_channel, "capacity": self.capacity}
        meta["sessions"] = len(self.sessions)
        try:
            await records.run(
                process_heartbeat_beat,
                instance=self.instance,
                role=ProcessRole.SANDBOX_HOST,
                meta=meta,
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
