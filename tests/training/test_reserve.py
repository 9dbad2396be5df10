"""The clock reserve of a timed run (medseg.training.schedule): the learning rate reaches zero when
the steps must stop, the finishing work is reserved for, and it never eats the budget."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from medseg.training.schedule import MAX_RESERVE_SHARE, MIN_RESERVE_S, Schedule


def clock(minutes: float, elapsed: float, finish_factor: float) -> Schedule:
    s = Schedule()
    s.config = SimpleNamespace(minutes=minutes, epochs=None, iterations_per_epoch=100, lr=1e-3)
    s.start, s.elapsed_before, s.iteration = time.perf_counter(), elapsed, 1000
    s.reserve_s, s.finish_factor = MIN_RESERVE_S, finish_factor
    return s


def test_learning_rate_anneals_when_the_steps_must_stop():
    s = clock(10, 0.0, finish_factor=4.0)
    s.reserve_for_validation(10.0)          # 1.5*10 + 5 + 4*10 + 10 = 70 s kept for the end
    assert s.reserve_s == pytest.approx(70.0)
    s.elapsed_before = 600 - 70 - 1e-3      # the moment the steps stop
    assert s.steps_time_left() <= 0 + 1e-2
    assert s.progress() == pytest.approx(1.0, abs=1e-3) and s.learning_rate() < 1e-6


def test_without_finishing_only_the_last_validation_is_reserved():
    s = clock(10, 0.0, finish_factor=0.0)
    s.reserve_for_validation(10.0)
    assert s.reserve_s == pytest.approx(1.5 * 10 + MIN_RESERVE_S)


def test_slow_finishing_never_takes_more_than_its_share():
    s = clock(15, 120.0, finish_factor=4.0)
    s.reserve_for_validation(160.0)         # a loaded machine, large images: 15 minutes of finishing
    assert s.reserve_s == pytest.approx(MAX_RESERVE_SHARE * 15 * 60)
    assert s.progress() < 0.2 and s.learning_rate() > 0.5e-3   # training goes on
