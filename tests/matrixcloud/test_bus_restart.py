"""After a bus restart every client of the bus works at its first use.

The bus is a private embedded one (the server ``serve`` runs) on a port of its own,
killed (SIGKILL, as in a crash) and started again on the same port while each client
holds an idle pooled connection to the dead server. The first command after the
restart must go through: a pooled connection that the server closed is replaced, not
used (matrixcloud/lib/bus.py, ``pool_options``). Before that, the host's reply to the
first tool call after a bus restart was lost and the call waited out its timeout
(tests/system/test_chaos.py, the bus fault).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from matrixcloud.lib.bus import free_port, start_embedded_bus
from sandbox import rpc
from sandbox.host.mailbox import Mailbox

BOUND = 5.0  # seconds: a working client answers in milliseconds


@dataclass
class PrivateBus:
    data_dir: Path
    port: int
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # A restart keeps the password, as serve's supervisor does (same config file).
        password = self.url.split("@")[0].rsplit(":", 1)[-1] if self.url else ""
        self.url, self.proc = start_embedded_bus(self.data_dir, port=self.port, password=password)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[PrivateBus]:
    private = PrivateBus(tmp_path, free_port())
    private.start()
    try:
        yield private
    finally:
        private.kill()


async def answer_one(mailbox: Mailbox) -> None:
    """What a host does with a tool call: take it from its mailbox and reply."""
    while (message := await mailbox.take(timeout=0.5)) is None:
        pass
    await mailbox.reply(message, {"ok": True, "result": message["arguments"]})


async def call_through(mailbox: Mailbox, runner: str, text: str) -> dict[str, Any]:
    """A web process's call to the host on ``runner``, answered by ``mailbox``."""
    call = rpc.host_call_async(
        channel=runner, job_id="job_1", name="echo", arguments={"text": text}, caller={},
        timeout=BOUND,
    )  # fmt: skip
    reply, _ = await asyncio.wait_for(asyncio.gather(call, answer_one(mailbox)), BOUND)
    return reply


def test_a_tool_call_goes_through_at_once_after_a_bus_restart(
    bus: PrivateBus, settings: Any
) -> None:
    settings.REDIS_URL = bus.url
    runner = "specific.host!restart"

    async def scenario() -> None:
        mailbox = Mailbox(runner, url=bus.url)
        try:
            assert (await call_through(mailbox, runner, "before"))["result"] == {"text": "before"}
            # In a thread, so that this loop sees the old connections close meanwhile
            # (as a web process's or a host's running loop does).
            await asyncio.to_thread(bus.restart)
            reply = await call_through(mailbox, runner, "after")
            assert reply.get("ok"), reply  # was the bus_down of a dead pooled connection
            assert reply["result"] == {"text": "after"}
        finally:
            await mailbox.close()
            client = rpc._async_clients.pop(asyncio.get_running_loop(), None)
            if client is not None:
                await client.aclose()

    asyncio.run(scenario())


def test_the_channel_layer_sends_at_once_after_a_bus_restart(bus: PrivateBus) -> None:
    layers: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    if layers["BACKEND"] != "channels_redis.core.RedisChannelLayer":
        pytest.skip("this run has no Redis channel layer")
    config: dict[str, Any] = dict(layers["CONFIG"])
    config["hosts"] = [{**host, "address": bus.url} for host in config["hosts"]]

    async def scenario() -> None:
        layer = RedisChannelLayer(**config)
        try:
            await layer.send("sandbox.restart", {"type": "sandbox.start", "job_id": "before"})
            assert (await asyncio.wait_for(layer.receive("sandbox.restart"), BOUND))[
                "job_id"
            ] == "before"
            await asyncio.to_thread(bus.restart)
            # sandbox.start is dispatched this way: it must not be lost to a dead connection
            await layer.send("sandbox.restart", {"type": "sandbox.start", "job_id": "after"})
            message = await asyncio.wait_for(layer.receive("sandbox.restart"), BOUND)
            assert message["job_id"] == "after"
        finally:
            await layer.close_pools()

    asyncio.run(scenario())
