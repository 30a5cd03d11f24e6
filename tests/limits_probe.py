"""A probe run inside a sandbox by tests/sandbox/test_sandbox_limits.py (stdlib only).

``python3 limits_probe.py <marker> <what> <n>`` prints one JSON line:
``memory``: n children each touch 150 MiB and hold it; the survivors after 3 s;
``tmpfs``: write n MiB into /tmp; ``disk``: write n MiB into the cwd (the scratch
dir); ``fork``: fork sleeping children until refused (at most n).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

MIB = 1024 * 1024


def memory(children: int) -> dict[str, object]:
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            block = bytearray(150 * MIB)
            for offset in range(0, len(block), 4096):
                block[offset] = 1
            time.sleep(30)
            os._exit(0)
        pids.append(pid)
    time.sleep(3)
    alive, killed = 0, 0
    for pid in pids:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            alive += 1
        elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            killed += 1
    return {"alive": alive, "killed": killed}


def write(path: str, mib: int) -> dict[str, object]:
    written = 0
    chunk = b"x" * MIB
    try:
        with open(path, "wb") as handle:
            for _ in range(mib):
                handle.write(chunk)
                handle.flush()
                written += 1
            os.fsync(handle.fileno())
    except OSError as exc:
        return {"written_mib": written, "error": exc.errno}
    return {"written_mib": written, "error": None}


def fork(limit: int) -> dict[str, object]:
    count = 0
    error = None
    while count < limit:
        try:
            pid = os.fork()
        except OSError as exc:
            error = exc.errno
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        count += 1
    return {"forked": count, "error": error}


def main() -> None:
    what, n = sys.argv[2], int(sys.argv[3])
    if what == "memory":
        result = memory(n)
    elif what == "tmpfs":
        result = write("/tmp/fill", n)
    elif what == "disk":
        result = write("fill", n)
    else:
        result = fork(n)
    print(json.dumps(result), flush=True)
    time.sleep(30)


if __name__ == "__main__":
    main()
