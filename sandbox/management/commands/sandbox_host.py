"""``manage.py sandbox_host``: run one sandbox host until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import warnings
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from sandbox.host import SandboxHost

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    """Run a sandbox host (sandbox/host.py) in an asyncio loop; SIGTERM/SIGINT stop it."""

    help = "Run a sandbox host: consume sandbox.start and its own reply channel on the bus."
    # serve runs the system checks once; here they would import the whole API (~0.5 s
    # per start and restart) and let a broken view stop a role that never serves one.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            logger.warning("REDIS_URL is unset: this host only hears its own process")
        asyncio.run(self._main())
        gc.freeze()  # skips the interpreter's final collection: ~0.5 s of exit with this heap

    async def _main(self) -> None:
        _pidfd_child_watcher()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await SandboxHost().run(stop)


def _pidfd_child_watcher() -> None:
    """Watch server processes with pidfds (Python 3.12 does by default): 3.11's default
    watcher runs one thread per child, so hundreds of sessions would be hundreds of
    threads."""
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "PidfdChildWatcher"):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
        except OSError:  # pidfd_open needs Linux 5.3; keep the default watcher
            logger.info("pidfds unavailable: one watcher thread per sandbox")
