"""How the property tests run: one set of Hypothesis settings for all of them.

Bounded and repeatable: no deadline (a loaded machine is not a bug), no example
database, the same examples every run. The quick lane (``./dev test --quick`` sets
``MATRIX_TEST_QUICK``) runs a fifth of each property's examples, at least
:data:`QUICK_FLOOR`; ``./dev test`` and CI run them all.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

QUICK_SHARE = 5
QUICK_FLOOR = 10


def examples(wanted: int) -> int:
    """How many of ``wanted`` examples this run tries."""
    if os.environ.get("MATRIX_TEST_QUICK"):
        return min(wanted, max(wanted // QUICK_SHARE, QUICK_FLOOR))
    return wanted


def bounded(wanted: int, *also_suppressed: HealthCheck) -> settings:
    """The settings of a property test that tries ``wanted`` examples."""
    return settings(
        max_examples=examples(wanted),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, *also_suppressed],
    )
