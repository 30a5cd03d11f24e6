"""Waking the workers: a hint on the bus that there is work in the database.

The database holds the work (a queued job row, an outbox row); a wake only says "look
now" so a worker need not poll fast. It goes to the :data:`WAKE_GROUP` group every
``manage.py worker`` joins, and to the listeners of this process (a worker's own claim
loop; a test standing in for the worker). A wake the bus loses costs the worker's idle
poll interval, never the work: a worker also looks on its own every second.

A message is ``{"type": "worker.wake"}``, with ``"sweep": <app label>`` when the work
is that app's sweep (``AppConfig.sweep``, see ``matrixcloud.lib.sweeps``) rather than
a queued job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from matrixcloud.lib.busloop import bus_run

logger = logging.getLogger(__name__)
WAKE_GROUP = "worker.wake"
WAKE_TYPE = "worker.wake"
Listener = Callable[[dict[str, Any]], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


def wake_message(sweep: str = "") -> dict[str, Any]:
    return {"type": WAKE_TYPE, "sweep": sweep} if sweep else {"type": WAKE_TYPE}


def wake_workers(*, sweep: str = "", local_only: bool = False) -> None:
    """Tell the workers to look for work now (``sweep``: that app's sweep).

    ``local_only``: only this process's listeners, when the work can only have been
    freed here (a finished job frees its slot for the worker it ran in). Never raises:
    a wake that fails is logged, and the workers' idle poll finds the work.
    """
    message = wake_message(sweep)
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(message)
        except Exception:  # a listener's failure must not fail the caller's commit
            logger.exception("a wake listener failed")
    if local_only and listeners:
        return
    layer = bus_layer()
    if layer is None:
        return
    try:
        bus_run(lambda: layer.group_send(WAKE_GROUP, message))
    except Exception:  # the bus is down: the workers' idle poll finds the work
        logger.warning("could not wake the workers", exc_info=True)


def bus_layer() -> Any:
    """The channel layer, or None where it could not reach another process (none, or
    the in-memory layer of a process started alone)."""
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return layer


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` with every wake this process sends while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
