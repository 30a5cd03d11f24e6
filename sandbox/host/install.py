"""A session's ``install`` step: its npx/uvx package into the cache, before it starts.

Sandboxes have no network, so ``npx -y <pkg>`` inside one can fetch nothing. A package
on the prefetch allow-list (``MATRIX_RUNTIME_PREFETCH_ALLOWED``) that the cache lacks is
installed here first, by the sandbox host, outside the server's sandbox (installers run
with npm's install scripts off; sandbox/prefetch.py), as events of the session:
``install``/``start``, ``progress`` at most once a second while the installer writes,
then ``ok`` (or the session ends with ``install``/``error``). The server then starts
offline from the cache, as a prefetched one does; the next launch skips all of this.

Before installing, the registry is asked for the package once, within
:data:`sandbox.prefetch.REGISTRY_TIMEOUT` seconds: a registry that cannot be reached,
or lacks the package, ends the session at once with the fix in the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sandbox.prefetch import (
    FETCH_LINE,
    PrefetchFailed,
    PrefetchRefused,
    Wanted,
    cached_argv,
    prefetch,
    registry_check,
)

PROGRESS_EVERY = 1.0  # seconds between two progress events, at most
CANCEL_WAIT = 10.0  # how long a stopped session waits for its installer to be killed
LINE_IN_EVENT = 200
# Interpreters whose first argument is a script file on the host.
SCRIPT_RUNNERS = frozenset(
    {"node", "nodejs", "python", "python3", "deno", "bun", "ruby", "perl", "sh", "bash"}
)
RO_BINDS_VARIABLE = "MATRIX_RUNTIME_SANDBOX_RO_BINDS"


class InstallFailed(Exception):
    """The install step cannot go on; the message is the session's error."""


def label(wanted: Wanted) -> str:
    """``npm:@scope/name@1.2.3`` or ``pypi:name==1.0``: how messages name a package."""
    return f"{wanted.spec.ecosystem}:{wanted.spec.install}"


class PackageInstall:
    """One session's install of one package, reported as ``install`` events."""

    def __init__(self, wanted: Wanted, *, emit: Callable[..., Awaitable[None]]) -> None:
        self.wanted = wanted
        self.emit = emit
        self.package = label(wanted)
        self._lock = threading.Lock()
        self._lines = 0
        self._fetched = 0
        self._last = ""
        self._reported = 0

    def refusal(self) -> str:
        """Why a package off the allow-list cannot run here, and the three ways out."""
        return (
            f"{self.package} is not in the sandbox cache, and sandboxes run without network, "
            "so it cannot be fetched at launch: it is not on the prefetch allow-list "
            "(MATRIX_RUNTIME_PREFETCH_ALLOWED). Add it there (it is then installed at "
            f"launch), or run `manage.py sandbox_prefetch {self.package}` on the sandbox "
            "host, or start the session with allow_network "
            "(where MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK permits it)"
        )

    def unreachable(self, reason: str) -> str:
        return (
            f"cannot install {self.package}: {reason}. The sandbox host fetches packages "
            "from their registry before the server starts offline: make the registry "
            f"reachable from this host, or run `manage.py sandbox_prefetch {self.package}` "
            "where it is, or start the session with allow_network "
            "(MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK)"
        )

    def line(self, text: str) -> None:
        """One line of the installer's output (from its thread)."""
        with self._lock:
            self._lines += 1
            if FETCH_LINE.search(text):
                self._fetched += 1
            if text.strip():
                self._last = text.strip()[:LINE_IN_EVENT]

    def _progress(self, started: float) -> dict[str, Any] | None:
        with self._lock:
            if self._lines == self._reported:
                return None
            self._reported = self._lines
            return {
                "package": self.package,
                "elapsed_s": round(time.monotonic() - started, 1),
                "fetched": self._fetched,
                "line": self._last,
            }

    async def run(self, argv: list[str]) -> list[str]:
        """Check the registry, install, report; the argv that starts from the cache."""
        started = time.monotonic()
        await self.emit(
            (
                "install",
                "start",
                f"Installing {self.package} (not in the sandbox cache yet)",
                {"package": self.package},
            )
        )
        try:
            registry = await asyncio.to_thread(registry_check, self.wanted.spec)
        except PrefetchFailed as exc:
            raise self._failed(self.unreachable(str(exc))) from exc
        cancel = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(
                prefetch, self.wanted.spec, on_line=self.line, cancel=cancel, reuse=True
            )
        )
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=PROGRESS_EVERY)
                progress = self._progress(started)
                if progress is not None and not work.done():
                    await self.emit(("install", "progress", "Installing", progress))
            work.result()
        except asyncio.CancelledError:  # a stop: kill the installer, bounded
            cancel.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(work, CANCEL_WAIT)
            raise
        except PrefetchRefused as exc:
            raise self._failed(f"cannot install {self.package}: {exc}") from exc
        except PrefetchFailed as exc:
            raise self._failed(f"cannot install {self.package}: {exc}") from exc
        cached = await asyncio.to_thread(cached_argv, argv)
        if cached is None:
            raise self._failed(
                f"{self.package} was installed, but it has no program npx/uvx would run"
            )
        data = {
            "package": self.package,
            "elapsed_s": round(time.monotonic() - started, 1),
            "fetched": self._fetched,
            "registry": registry,
            "from_cache": cached,
        }
        await self.emit(("install", "ok", f"Installed {self.package}", data))
        return cached

    def _failed(self, message: str) -> InstallFailed:
        return InstallFailed(message)


def host_paths(argv: list[str]) -> list[Path]:
    """The host paths a command line names to run: its program, when a path, and the
    script an interpreter is given, when absolute (``node /opt/x/index.js``)."""
    if not argv:
        return []
    paths = [Path(argv[0])] if "/" in argv[0] else []
    if Path(argv[0]).name.rstrip("0123456789.") in SCRIPT_RUNNERS:
        script = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
        if script is not None and script.startswith("/"):
            paths.append(Path(script))
    return paths


def unseen_path_message(path: Path) -> str:
    """Why the sandbox cannot run what ``path`` names, and how to show it."""
    if not path.exists():
        return f"{path} does not exist on the sandbox host"
    folder = path if path.is_dir() else path.parent
    return (
        f"the sandbox cannot see {path}: sandboxes see /usr, the Python and Node "
        "installations, the prefetch cache and their own scratch dir, and nothing else "
        f"of the host unless it is in {RO_BINDS_VARIABLE} (read-only); add {folder} there "
        "(or prefetch the server with `manage.py sandbox_prefetch`)"
    )
