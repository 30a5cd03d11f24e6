"""matrixcloud.lib.backoff: doubling delays, capped, reset, and kept to a total deadline."""

from __future__ import annotations

import itertools
import time

import pytest

from matrixcloud.lib.backoff import Backoff


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_up_to_the_cap():
    assert list(itertools.islice(Backoff(0.5, 4.0), 6)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_first_delay_over_the_cap_is_kept_once():
    assert list(itertools.islice(Backoff(10.0, 4.0), 3)) == [10.0, 4.0, 4.0]


def test_reset_starts_over():
    retry = Backoff(1.0, 60.0)
    assert [next(retry), next(retry), next(retry)] == [1.0, 2.0, 4.0]
    retry.reset()
    assert [next(retry), next(retry)] == [1.0, 2.0]


def test_no_delay_runs_past_the_total_and_then_it_ends():
    clock = Clock()
    pauses = Backoff(1.0, 10.0, total=5.0, clock=clock)
    assert next(pauses) == 1.0
    clock.now += 1.0
    assert next(pauses) == 2.0
    clock.now += 2.0
    assert next(pauses) == 2.0  # 4 s was due; 2 s are left
    clock.now += 2.0
    assert next(pauses, None) is None
    assert list(pauses) == []


def test_the_deadline_survives_a_reset():
    clock = Clock()
    pauses = Backoff(1.0, 10.0, total=3.0, clock=clock)
    clock.now += 3.0
    pauses.reset()
    assert next(pauses, None) is None


def test_a_real_total_bounds_the_time_spent_waiting():
    started = time.monotonic()
    for pause in Backoff(0.01, 0.05, total=0.2):
        time.sleep(pause)
    assert 0.2 <= time.monotonic() - started < 0.5


@pytest.mark.parametrize(("first", "cap"), [(0, 1.0), (1.0, 0), (-1.0, 1.0)])
def test_delays_must_be_positive(first, cap):
    with pytest.raises(ValueError, match="positive"):
        Backoff(first, cap)
