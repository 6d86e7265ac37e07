"""FetchPacer: the short wait while records flow, the idle wait only after a quiet spell."""

from __future__ import annotations

from topics.pacing import FetchPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_stays_short_until_the_topics_were_quiet_long_enough() -> None:
    clock = Clock()
    pacer = FetchPacer(10, 200, idle_after_s=5.0, clock=clock)
    assert pacer.wait_ms(0) == 10, "a consumer starts on the short wait"
    clock.now += 4.9
    assert pacer.wait_ms(0) == 10
    clock.now += 0.2
    assert pacer.wait_ms(0) == 200 and pacer.idle


def test_the_first_record_brings_the_short_wait_back() -> None:
    clock = Clock()
    pacer = FetchPacer(10, 200, idle_after_s=1.0, clock=clock)
    pacer.wait_ms(0)
    clock.now += 2.0
    assert pacer.wait_ms(0) == 200
    assert pacer.wait_ms(3) == 10 and not pacer.idle
    clock.now += 0.5
    assert pacer.wait_ms(0) == 10, "quiet for less than idle_after_s since the last record"


def test_an_idle_wait_not_longer_than_the_busy_one_turns_pacing_off() -> None:
    clock = Clock()
    pacer = FetchPacer(50, 50, idle_after_s=0.0, clock=clock)
    clock.now += 60.0
    assert pacer.wait_ms(0) == 50 and not pacer.idle
