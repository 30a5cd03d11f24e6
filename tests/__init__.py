"""The test suite, one folder per app (``tests/<app>/``), whole-service tests in
``tests/system/``; the modules directly in ``tests/`` are the support they share (fake
servers, process helpers, factories)."""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
