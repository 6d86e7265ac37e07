"""The drain loop of ``tierflow up``: when it calls the broker empty, and what it says it left."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from infra.drain import DrainResult, drain, split_lag
from topics.errors import BrokerError


class Script:
    """Lag and consumed counts read in turn from lists (the last one repeats); a fake clock that each read advances."""

    def __init__(self, lags: list[dict[str, int]], consumed: list[int], step_s: float = 0.5) -> None:
        self.lags, self.counts, self.step_s = lags, consumed, step_s
        self.now = 0.0
        self.reads = 0

    async def lag(self) -> Mapping[str, int]:
        self.now += self.step_s
        self.reads += 1
        return self.lags[min(self.reads - 1, len(self.lags) - 1)]

    async def consumed(self) -> int:
        return self.counts[min(self.reads - 1, len(self.counts) - 1)]

    def clock(self) -> float:
        return self.now


def run(script: Script, timeout_s: float, stop_now: asyncio.Event | None = None) -> DrainResult:
    return asyncio.run(
        drain(
            script.lag, script.consumed, timeout_s, stop_now=stop_now or asyncio.Event(), clock=script.clock, every_s=0
        )
    )


def test_drained_only_when_the_lag_is_zero_and_nothing_moves() -> None:
    script = Script(
        lags=[{"router": 5, "sink": 2}, {"router": 0, "sink": 0}, {"router": 0, "sink": 0}, {"router": 0}],
        consumed=[10, 15, 17, 17],
    )
    result = run(script, timeout_s=60)
    # zero lag from read 2, but consumption moved until read 3: reads 4 and 5 are the two quiet ones
    assert result.drained and script.reads == 5
    assert "every request the broker held has its result" in result.summary()


def test_a_zero_lag_with_records_still_being_consumed_is_not_drained() -> None:
    """Tansu may report a batch's base offset as the end: work still moving means not done."""
    script = Script(lags=[{"router": 0}], consumed=list(range(100)))
    result = run(script, timeout_s=5)
    assert not result.drained and result.requests_unfinished == 0


def test_the_bound_ends_it_with_what_was_left_by_pool() -> None:
    script = Script(lags=[{"router": 1200, "worker.small": 30, "verifier": 4, "sink": 9}], consumed=[1])
    result = run(script, timeout_s=3)
    assert not result.drained and not result.interrupted
    assert result.unfinished == {"router": 1200, "worker.small": 30, "verifier": 4}
    assert result.requests_unfinished == 1234 and result.unwritten == 9
    line = result.summary()
    assert "broker.drain_s reached" in line and "1,234 requests unfinished" in line
    assert "router 1,200" in line and "9 results not written by the sink" in line


def test_a_second_signal_stops_at_once_and_says_so() -> None:
    stop_now = asyncio.Event()
    stop_now.set()
    result = run(Script(lags=[{"router": 3}], consumed=[1]), timeout_s=60, stop_now=stop_now)
    assert result.interrupted and result.requests_unfinished == 3 and "interrupted" in result.summary()


def test_a_broker_that_cannot_be_read_ends_the_drain_with_the_reason() -> None:
    async def unreadable() -> Mapping[str, int]:
        raise BrokerError("no offsets from 127.0.0.1:9092 within 30s")

    async def consumed() -> int:
        return 0

    result = asyncio.run(drain(unreadable, consumed, 10, stop_now=asyncio.Event()))
    assert not result.drained and "no offsets from 127.0.0.1:9092" in result.summary()


def test_split_lag_keeps_the_sink_apart() -> None:
    assert split_lag({"router": 2, "sink": 5, "verifier": 1}) == ({"router": 2, "verifier": 1}, 5)
    assert split_lag({}) == ({}, 0)
