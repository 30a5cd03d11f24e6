"""Logs the garbage collector's pauses of a process the benches start (``sse_fanout.py``
puts this folder first on the web process's ``PYTHONPATH``).

With ``MATRIX_BENCH_GC_LOG`` set, every collection of the oldest generation, and any
other taking 5 ms or more, is appended to that file as ``<wall clock> <generation>
<milliseconds> <objects collected>``. ``MATRIX_BENCH_GC_THRESHOLD=a,b,c`` also sets
the collector's thresholds (``gc.set_threshold``), to compare tunings. Without either,
this does nothing.
"""

import gc
import os
import time

_PATH = os.environ.get("MATRIX_BENCH_GC_LOG")

if _PATH:
    _log = open(_PATH, "a", buffering=1)  # noqa: SIM115 (open for the process's life)
    _started = [0.0]

    def _observe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        pause = (time.perf_counter() - _started[0]) * 1000
        if info["generation"] == 2 or pause >= 5:
            _log.write(f"{time.time():.3f} {info['generation']} {pause:.1f} {info['collected']}\n")

    gc.callbacks.append(_observe)

if os.environ.get("MATRIX_BENCH_GC_THRESHOLD"):  # e.g. 50000,20,10 (CPython's: 700,10,10)
    gc.set_threshold(*map(int, os.environ["MATRIX_BENCH_GC_THRESHOLD"].split(",")))
