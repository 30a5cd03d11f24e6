"""``manage.py sandbox_host``: run one sandbox host until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await SandboxHost().run(stop)
