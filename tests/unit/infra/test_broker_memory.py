"""The embedded broker's memory: the warning ``tierflow up`` gives, and the measurement behind its figure.

No broker runs here: the warning is a pure function of the sampled RSS, and the load test's record
builder and line fit are checked on their own.
"""

from __future__ import annotations

import subprocess

import pytest

from infra.broker import EmbeddedBroker
from infra.cli.up import (
    EMBEDDED_MB_PER_MILLION,
    EMBEDDED_MB_PER_MILLION_AT_FULL_SPEED,
    NOT_WARNED,
    WARNED_NEAR,
    WARNED_PAST,
    embedded_broker_note,
    memory_warning,
    status_line,
)
from infra.config import load_portfolio
from load_tests.broker_memory import fit_line, request_records, tiers_for, wire_bytes
from topics.messages import Answer, Request, Result, Status, Task
from topics.wire import decode

BOUND = 1000


def _replay(samples: list[float], bound: int = BOUND) -> list[str | None]:
    """The messages the status loop would print for ``samples``, carrying ``warned`` as it does."""
    warned, said = NOT_WARNED, []
    for rss in samples:
        message, warned = memory_warning(rss, bound, warned)
        said.append(message)
    return said


def test_no_warning_below_80_percent_of_the_bound() -> None:
    assert _replay([50.0, 400.0, 799.0]) == [None, None, None]


def test_warns_once_at_80_percent_and_once_more_past_the_bound() -> None:
    said = _replay([700.0, 800.0, 850.0, 990.0, 1000.0, 1001.0, 1500.0, 3000.0])
    near, past = said[1], said[5]
    assert [i for i, m in enumerate(said) if m] == [1, 5]
    assert near is not None and "800 MB" in near and "80%" in near and "memory_warn_mb = 1,000" in near
    assert past is not None and "1,001 MB" in past and "past broker.memory_warn_mb = 1,000" in past
    for message in (near, past):
        assert "external" in message and "restart" in message  # what to do
        assert "\n" not in message


def test_a_jump_past_the_bound_gets_only_the_second_warning() -> None:
    said = _replay([100.0, 1200.0, 900.0, 1300.0])
    assert said[0] is None and said[1] is not None and "past" in said[1]
    assert said[2:] == [None, None]


def test_the_near_warning_says_how_much_room_is_left_from_the_measured_rate() -> None:
    message, warned = memory_warning(800.0, 1000, NOT_WARNED, mb_per_million=100.0)
    assert warned == WARNED_NEAR
    assert message is not None and "~100 MB per million" in message and "about 2,000,000 more requests" in message
    message, _ = memory_warning(1640.0, 2048, NOT_WARNED, mb_per_million=6000.0)
    assert message is not None and "about 68,000 more requests" in message  # two figures: a projection
    message, _ = memory_warning(800.0, 1000, NOT_WARNED, mb_per_million=0.0)
    assert message is not None and "million more" not in message  # no rate, no guess


@pytest.mark.parametrize("warned", [NOT_WARNED, WARNED_NEAR, WARNED_PAST])
def test_bound_0_disables_and_an_unmeasurable_broker_says_nothing(warned: int) -> None:
    assert memory_warning(10_000.0, 0, warned) == (None, warned)
    assert memory_warning(None, BOUND, warned) == (None, warned)


def test_the_start_line_says_what_the_embedded_broker_is_for() -> None:
    line = embedded_broker_note(2048)
    assert line.startswith("embedded broker: in memory, no retention, for a laptop, tests and demos")
    assert "external Kafka cluster" in line and "MB per million requests" in line and "2,048 MB" in line
    assert f"{EMBEDDED_MB_PER_MILLION_AT_FULL_SPEED:,.0f} to {EMBEDDED_MB_PER_MILLION:,.0f} MB per million" in line
    assert "warning off" in embedded_broker_note(0)
    assert "fetches slow to seconds once a partition holds ~20,000 batches" in line
    assert "\n" not in line


def test_status_line_ends_with_the_broker_memory_when_known() -> None:
    stats = {"router": [{"consumed": 3, "dead_letters": 0}]}
    assert status_line(stats, 312.4).endswith("router: 1x in=3 dlq=0 | broker 312 MB")
    assert "broker" not in status_line(stats)


def test_rss_mb_is_none_without_a_process_and_reads_a_live_one() -> None:
    broker = EmbeddedBroker()
    assert broker.rss_mb() is None
    # Any process stands in for the broker: rss_mb reads the pid it started, nothing else.
    broker.process = subprocess.Popen(["sleep", "30"])
    try:
        rss = broker.rss_mb()
        assert rss is not None and 0 < rss < 1024
    finally:
        broker.process.kill()
        broker.process.wait(timeout=5)
    assert broker.rss_mb() is None  # exited: not a 0 MB broker
    broker.process = None


@pytest.mark.parametrize("visited", [1, 2, 3])
def test_load_test_writes_the_records_the_pipeline_writes_per_request(visited: int) -> None:
    layout = load_portfolio("simulated").layout
    records = request_records(layout, 7, visited, "x" * 200, now=1000.0)
    topics = [topic for topic, *_ in records]
    escalations = [layout.escalate(tier) for tier in layout.tiers[1:visited]]
    expected = [layout.requests, layout.tier(layout.tiers[0]), layout.answers]
    for topic in escalations:
        expected += [topic, layout.answers]
    assert topics == [*expected, layout.results]
    assert {key for _, key, _, _ in records} == {b"mem-000000007"}
    assert all(headers and headers[0][0] == "traceparent" for *_, headers in records)
    # Every value is a valid message of its topic, as the stages would decode it.
    assert decode(Request, records[0][2]).input == "x" * 200
    task_topics = {layout.tier(layout.tiers[0]), *escalations}
    tasks = [decode(Task, value) for topic, _, value, _ in records if topic in task_topics]
    assert [task.hop for task in tasks] == list(range(visited))
    assert len(tasks[-1].history) == visited - 1
    answers = [decode(Answer, value) for topic, _, value, _ in records if topic == layout.answers]
    assert [answer.tier for answer in answers] == list(layout.tiers[:visited])
    result = decode(Result, records[-1][2])
    assert result.status is Status.OK and result.path == layout.tiers[:visited]
    assert wire_bytes(records) > 4 * 200  # the input rides in the Request, each Task and each Answer
    with pytest.raises(ValueError, match="visited"):
        request_records(layout, 7, 4, "x", now=1.0)


@pytest.mark.parametrize("mean", [1.0, 1.3, 1.7, 2.0, 2.5])
def test_tiers_visited_average_what_was_asked(mean: float) -> None:
    counts = [tiers_for(i, mean) for i in range(10_000)]
    assert set(counts) <= {int(mean), int(mean) + 1}
    assert sum(counts) / len(counts) == pytest.approx(mean, abs=0.005)


def test_fit_line_recovers_slope_and_rejects_degenerate_input() -> None:
    slope, intercept, r2 = fit_line([0, 10, 20, 30], [5.0, 7.0, 9.0, 11.0])
    assert (slope, intercept, r2) == pytest.approx((0.2, 5.0, 1.0))
    _, _, flat = fit_line([0, 1, 2], [3.0, 3.0, 3.0])
    assert flat == 0.0
    with pytest.raises(ValueError):
        fit_line([1], [1.0])
    with pytest.raises(ValueError):
        fit_line([2, 2], [1.0, 3.0])
