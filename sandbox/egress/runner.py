"""A session's egress proxy on the sandbox host: start it, read its decisions, stop it.

One ``proxy.py`` process per session with an allowlist (its own process: a crash or a
flood there touches no other session and not the host), listening on a Unix socket in
a private folder that only the sandbox is shown (bound at ``/run/matrix/egress.sock``).
Its decisions arrive as JSON lines on its standard output
(:mod:`sandbox.egress.guard`); ``on_denied`` gets each refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from sandbox.egress.guard_env import ALLOW_VARIABLE
from sandbox.isolation import terminate_tree

logger = logging.getLogger(__name__)

START_BOUND = 15.0  # the proxy's socket must appear within this
IDLE_TIMEOUT = 60  # seconds a proxied connection may sit idle
STOP_GRACE = 1.0
LINE_LIMIT = 4096

Denied = Callable[[dict[str, Any]], Awaitable[None]]


class EgressStartError(Exception):
    """The session's proxy did not start; the message says why."""


class SessionProxy:
    """The egress proxy of one session."""

    def __init__(self, allow: list[str], *, on_denied: Denied) -> None:
        self.allow = allow
        self.on_denied = on_denied
        self.folder = Path(tempfile.mkdtemp(prefix="mc-egress-"))
        self.socket = self.folder / "proxy.sock"
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.allowed = 0
        self.denied = 0

    async def start(self) -> None:
        env = {**os.environ, ALLOW_VARIABLE: json.dumps(self.allow), "PYTHONUNBUFFERED": "1"}
        argv = [
            sys.executable, "-m", "proxy",
            "--unix-socket-path", str(self.socket),
            "--plugins", "sandbox.egress.guard.AllowlistGuard",
            "--threaded", "--num-acceptors", "1",
            "--timeout", str(IDLE_TIMEOUT),
            "--log-level", "WARNING",
        ]  # fmt: skip
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=settings.BASE_DIR,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=LINE_LIMIT * 4,
        )
        self._reader = asyncio.create_task(self._read(), name="egress-decisions")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_BOUND
        while not self.socket.exists():
            if self.proc.returncode is not None or loop.time() > deadline:
                stderr = await self._stderr()
                await self.stop()
                raise EgressStartError(f"the egress proxy did not start: {stderr or 'no output'}")
            await asyncio.sleep(0.05)
        self.socket.chmod(0o666)  # the sandbox's uid connects; the folder stays 0700

    async def _stderr(self) -> str:
        if self.proc is None or self.proc.stderr is None or self.proc.returncode is None:
            return ""
        with contextlib.suppress(Exception):
            return (await asyncio.wait_for(self.proc.stderr.read(), 1)).decode()[-1000:]
        return ""

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                decision = json.loads(line)
            except ValueError:
                continue
            if decision.get("event") == "allowed":
                self.allowed += 1
            elif decision.get("event") == "denied":
                self.denied += 1
                try:
                    await self.on_denied(decision)
                except Exception:
                    logger.exception("could not record an egress refusal")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await terminate_tree(self.proc, grace=STOP_GRACE)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, STOP_GRACE)
        shutil.rmtree(self.folder, ignore_errors=True)
