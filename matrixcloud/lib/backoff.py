"""The one doubling backoff: how long to wait before the next try.

``Backoff(first, cap)`` yields ``first``, then twice the last delay, never more than
``cap``; ``reset()`` starts over after a success. With ``total`` it also keeps to a
deadline: no delay runs past ``total`` seconds from its making, and once they are spent
the iteration ends. Loops that retry a bus, a control plane or a restart, and polls that
look soon and then less often, all count their waits with it.
Standard library only: the ``serve`` supervisor imports it (no Django there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator


class Backoff(Iterator[float]):
    """Bounded, doubling delays in seconds: ``next(backoff)`` is the wait before the
    next try. Infinite unless ``total`` is given."""

    def __init__(
        self,
        first: float,
        cap: float,
        *,
        total: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if first <= 0 or cap <= 0:
            raise ValueError("backoff delays must be positive")
        self.first = first
        self.cap = cap
        self._clock = clock
        self._deadline = None if total is None else clock() + total
        self._next = first

    def __next__(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self.cap)
        if self._deadline is None:
            return delay
        left = self._deadline - self._clock()
        if left <= 0:
            raise StopIteration
        return min(delay, left)

    def reset(self) -> None:
        """Back to ``first`` (a try succeeded); the deadline stays."""
        self._next = self.first
