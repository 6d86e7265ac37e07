"""The autoscaler's one piece of arithmetic: a replica's service rate from two samples of its counters."""

from __future__ import annotations

import pytest

from infra.autoscaler import MIN_BUSY_S, _Counters, service_rate


def test_the_service_rate_is_records_per_second_of_work_over_replicas_seen_twice() -> None:
    before = {0: _Counters(100, 2.0), 1: _Counters(50, 1.0)}
    after = {0: _Counters(200, 4.0), 1: _Counters(100, 2.0), 2: _Counters(500, 1.0)}  # 2 is new: left out
    assert service_rate(before, after) == pytest.approx(150 / 3.0)


def test_too_little_work_measures_nothing() -> None:
    before = {0: _Counters(0, 0.0)}
    assert service_rate(before, {0: _Counters(3, MIN_BUSY_S / 2)}) is None
    assert service_rate(before, {1: _Counters(300, 5.0)}) is None  # no replica seen twice
