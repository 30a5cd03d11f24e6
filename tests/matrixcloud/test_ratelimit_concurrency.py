"""The write limiter's counter under real concurrency: no hit is lost or counted twice
and exactly ``limit`` pass: threads in this process (on the bus when there is one, else
on the in-process counter), and separate processes on one embedded bus (the counts are
shared by every process, not kept per process as the original's map was:
docs/COMPATIBILITY.md#f-03)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from matrixcloud.errors import RateLimited
from matrixcloud.lib import ratelimit
from matrixcloud.lib.bus import free_port, start_embedded_bus

SUBJECT = "ip:198.51.100.99"
BOUND = 60  # seconds: each side takes well under one

# Run in a child process: hit the meter N times, print how many passed.
CHILD = """
import sys, django
django.setup()
from matrixcloud.lib import ratelimit
from matrixcloud.errors import RateLimited
limit, hits = int(sys.argv[1]), int(sys.argv[2])
meter = ratelimit.Meter(ratelimit.WRITES, "ip:198.51.100.98", limit)
passed = 0
for _ in range(hits):
    try:
        ratelimit.meter_hit(meter)
        passed += 1
    except RateLimited:
        pass
print(passed)
"""


def test_concurrent_writes_each_count_once_and_the_limit_holds() -> None:
    """20 threads x 10 hits at once on one key: every hit is counted exactly once and
    exactly ``limit`` of them pass."""
    callers, hits, limit = 20, 10, 150
    now = timezone.now()
    meter = ratelimit.Meter(ratelimit.WRITES, SUBJECT, limit)
    gate = threading.Barrier(callers, timeout=BOUND)

    def one(_: int) -> tuple[int, int]:
        passed = refused = 0
        gate.wait()
        for _ in range(hits):
            try:
                ratelimit.meter_hit(meter, now=now)
                passed += 1
            except RateLimited:
                refused += 1
        return passed, refused

    with ThreadPoolExecutor(max_workers=callers) as pool:
        outcomes = list(pool.map(one, range(callers), timeout=BOUND))
    assert sum(p for p, _ in outcomes) == limit
    assert sum(r for _, r in outcomes) == callers * hits - limit
    assert ratelimit.counted(ratelimit.WRITES, SUBJECT, now) == callers * hits


def test_processes_share_one_count_on_the_bus(tmp_path: Path) -> None:
    """Four processes hit one address's budget on a real embedded bus at once: exactly
    ``limit`` writes pass in all, as if they were one process."""
    url, bus = start_embedded_bus(tmp_path / "bus", port=free_port())
    try:
        env = {
            **os.environ,
            "REDIS_URL": url,
            "MATRIX_RUNTIME_BUS_PREFIX": f"rl{os.getpid()}",
            "MATRIX_RUNTIME_DATA_DIR": str(settings.MATRIX_DATA_DIR),
        }
        children, limit, hits = 4, 50, 40
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, str(limit), str(hits)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(children)
        ]
        passed = [int(proc.communicate(timeout=BOUND)[0].strip()) for proc in procs]
        assert all(proc.returncode == 0 for proc in procs)
        # Counted per process, each would pass all its 40 (160 in all).
        assert sum(passed) == limit
    finally:
        bus.kill()
        bus.wait(timeout=10)
