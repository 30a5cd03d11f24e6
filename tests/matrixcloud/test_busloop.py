"""Bus sends from sync code (matrixcloud/lib/busloop.py): one kept loop per process for
plain threads, the parent loop for code that sync_to_async entered, bounded waits, and
a fresh loop in a forked child."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from matrixcloud.lib.busloop import bus_run

BOUND = 10.0


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_plain_threads_share_one_kept_loop_and_messages_arrive() -> None:
    layer = get_channel_layer()
    assert layer is not None
    channel = f"busloop-test-{uuid.uuid4().hex}"
    loops: list[Any] = []

    def sender(n: int) -> None:
        loops.append(bus_run(running_loop))
        bus_run(lambda: layer.send(channel, {"type": "probe", "n": n}))

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert len({id(loop) for loop in loops}) == 1  # one loop for every plain thread
    assert loops[0].is_running()

    async def receive_all() -> list[int]:
        return [(await asyncio.wait_for(layer.receive(channel), BOUND))["n"] for _ in range(5)]

    assert sorted(bus_run(receive_all)) == [0, 1, 2, 3, 4]


def test_code_entered_from_an_event_loop_sends_on_that_loop() -> None:
    async def outer() -> tuple[Any, Any]:
        mine = asyncio.get_running_loop()
        used = await sync_to_async(bus_run, thread_sensitive=False)(running_loop)
        return mine, used

    mine, used = asyncio.run(outer())
    assert used is mine
    assert bus_run(running_loop) is not mine


def test_a_send_that_hangs_is_cut_off_and_cancelled() -> None:
    cancelled = threading.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"within 0\.2 s"):
        bus_run(hang, timeout=0.2)
    assert time.monotonic() - started < BOUND
    assert cancelled.wait(BOUND)
    assert bus_run(running_loop).is_running()  # the loop still serves the next send


def _child(out: Any) -> None:
    loop = bus_run(running_loop)
    out.put((id(loop), loop.is_running()))


def test_a_forked_child_gets_a_loop_of_its_own() -> None:
    parent = bus_run(running_loop)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_child, args=(out,))
    child.start()
    child.join(BOUND)
    assert child.exitcode == 0
    _, running = out.get(timeout=BOUND)
    assert running  # the parent's loop thread did not survive the fork: a new one runs
    assert parent.is_running()
