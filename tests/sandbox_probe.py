"""A probe run inside a sandbox by tests/sandbox/test_isolation.py (stdlib only, no Django).

``python3 sandbox_probe.py <marker> <json config>``: runs the checks the config names
and prints one JSON line. The marker is only there so the test can find every process
of the probe (forked ones too) in the host's /proc.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any


def try_read(path: str) -> str:
    try:
        Path(path).read_bytes()
    except OSError as exc:
        return type(exc).__name__
    return "read"


def try_write(path: str) -> str:
    try:
        Path(path).write_text("probe")
    except OSError as exc:
        return type(exc).__name__
    return "written"


def try_list(path: str) -> Any:
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return type(exc).__name__


def try_connect(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "connected"
    except OSError as exc:
        return type(exc).__name__


def fork_bomb(limit: int) -> dict[str, Any]:
    """Fork children that sleep until the process limit stops it (or ``limit`` forks)."""
    count = 0
    error = ""
    while count < limit:
        try:
            pid = os.fork()
        except OSError as exc:
            error = type(exc).__name__
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        count += 1
    return {"forked": count, "error": error}


def daemonize(new_session: bool) -> None:
    """Leave a grandchild behind that outlives its parent (optionally in a new session)."""
    if os.fork() == 0:
        if new_session:
            os.setsid()
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        os._exit(0)
    os.wait()


def limits() -> dict[str, int]:
    names = {
        "memory_bytes": resource.RLIMIT_AS,
        "max_processes": resource.RLIMIT_NPROC,
        "open_files": resource.RLIMIT_NOFILE,
        "file_size_bytes": resource.RLIMIT_FSIZE,
        "cpu_seconds": resource.RLIMIT_CPU,
        "core": resource.RLIMIT_CORE,
    }
    return {name: resource.getrlimit(which)[1] for name, which in names.items()}


def status() -> dict[str, str]:
    fields = ("Uid", "CapEff", "CapPrm", "NoNewPrivs")
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if k in fields}


def main() -> None:
    config = json.loads(sys.argv[2])
    out: dict[str, Any] = {"pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ)}
    out["reads"] = {path: try_read(path) for path in config.get("read", [])}
    out["writes"] = {path: try_write(path) for path in config.get("write", [])}
    out["lists"] = {path: try_list(path) for path in config.get("list", [])}
    if "connect" in config:
        out["connect"] = try_connect(config["connect"])
    if config.get("limits"):
        out["limits"] = limits()
        out["status"] = status()
        out["procs"] = [name for name in os.listdir("/proc") if name.isdigit()]
    if "fork_bomb" in config:
        out["fork_bomb"] = fork_bomb(config["fork_bomb"])
    if "daemon" in config:
        daemonize(new_session=config["daemon"] == "setsid")
    if config.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(json.dumps(out), flush=True)
    if config.get("linger"):
        time.sleep(60)


if __name__ == "__main__":
    main()
