"""The drift watch on simulated streams: no alarm while tiers are stable, one for a real shift.

The stream walks each request up a ladder of tiers: a tier accepts with its acceptance
probability (else the request escalates), with a confidence drawn per answer; a share of the
accepted answers gets a label later, correct with the probability the test says (the confidence
itself for a calibrated tier). Everything is seeded.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from policies.drift import (
    MAX_TIERS,
    DriftAlarm,
    DriftConfig,
    DriftState,
    Tally,
    acceptance_alarm,
    calibration_alarm,
    delivered_of,
    label_of,
    verdicts_of,
    wilson_interval,
)
from topics.feedback import Feedback
from topics.messages import Decision, Result, Status

NOW = 1_800_000_000.0
"""A multiple of every bucket width used here, so windows start where the tests expect."""


def calibrated(confidence: float, rng: random.Random) -> bool:
    return rng.random() < confidence


@dataclass
class Stream:
    state: DriftState
    accept: dict[str, float]
    """P(accept) per tier, in ladder order (the last one's misses end the request ``exhausted``)."""
    rate: float = 3.0
    seed: int = 0
    label_share: float = 0.0
    correct: dict[str, Callable[[float, random.Random], bool]] = field(default_factory=dict)
    """Per tier, whether a label says its accepted answer of that confidence is correct (default: calibrated)."""
    label_delay_s: tuple[float, float] = (60.0, 900.0)
    t: float = NOW
    alarms: list[tuple[float, DriftAlarm]] = field(default_factory=list)
    labels: list[tuple[float, str, bool]] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def request(self) -> None:
        self.requests += 1
        rid = f"r{self.requests}"
        verdicts: list[tuple[str, bool, float]] = []
        for tier, p in self.accept.items():
            confidence = self.rng.uniform(0.6, 1.0)
            ok = self.rng.random() < p
            verdicts.append((tier, ok, confidence))
            if ok:
                if self.rng.random() < self.label_share:
                    correct = self.correct.get(tier, calibrated)(confidence, self.rng)
                    heapq.heappush(self.labels, (self.t + self.rng.uniform(*self.label_delay_s), rid, correct))
                break
        self.state.observe_result(verdicts, rid, self.t)

    def run(self, seconds: float, check_every_s: float = 30.0) -> None:
        end = self.t + seconds
        next_check = self.t + check_every_s
        step = 1.0 / self.rate
        while self.t < end:
            self.t += step
            while self.labels and self.labels[0][0] <= self.t:
                _, rid, correct = heapq.heappop(self.labels)
                self.state.observe_label(rid, correct, self.t)
            self.request()
            if self.t >= next_check:
                self.alarms.extend((self.t, alarm) for alarm in self.state.alarms(self.t))
                next_check += check_every_s


# --- no false alarms --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_stable_stream_raises_no_alarm_over_many_windows(seed: int) -> None:
    config = DriftConfig(window_s=120.0)
    state = DriftState(config)
    stream = Stream(
        state,
        {"small": 0.6, "mid": 0.5, "large": 0.9},
        rate=10.0,
        seed=seed,
        label_share=0.5,
        # mid is a little overconfident, but within the bound: not drift
        correct={"mid": lambda c, rng: rng.random() < c - 0.05},
    )
    stream.run(60 * config.window_s, check_every_s=20.0)  # 60 windows, 360 looks
    assert stream.alarms == []
    # and every watch was armed all along: references frozen, enough answers and labels to judge
    for tier in ("small", "mid", "large"):
        reference = state.references[tier]
        assert reference.tally() is not None
        assert state.recent[tier].tally(stream.t, since=reference.end).count >= config.min_answers
        assert state.labelled[tier].tally(stream.t).count >= config.min_labels


# --- acceptance ---------------------------------------------------------------------------------------


def test_an_acceptance_shift_from_0_8_to_0_5_raises_one_alarm_naming_the_window() -> None:
    config = DriftConfig()
    state = DriftState(config)
    stream = Stream(state, {"small": 0.8, "large": 0.9})
    stream.run(900.0)
    assert stream.alarms == []
    shifted_at = stream.t
    stream.accept["small"] = 0.5  # large now gets more traffic, at its same rate: no drift there
    stream.run(300.0)
    alarms = state.alarms(stream.t)
    assert len(alarms) == 1
    (alarm,) = alarms
    assert (alarm.tier, alarm.kind, alarm.bound) == ("small", "acceptance", config.acceptance_bound)
    assert shifted_at <= alarm.window_start < alarm.window_end <= stream.t
    assert alarm.window_end - alarm.window_start >= config.window_s * 0.9
    assert alarm.count >= config.min_answers
    assert alarm.reference == pytest.approx(0.8, abs=0.05)
    assert alarm.observed == pytest.approx(0.5, abs=0.07)
    assert alarm.interval[1] < -config.acceptance_bound
    assert alarm.reference_start == pytest.approx(NOW, abs=1.0)
    assert alarm.reference_end is not None and alarm.reference_end <= shifted_at
    assert alarm.reference_count >= config.min_answers
    # every alarm since the shift was this tier's acceptance
    assert stream.alarms and {(a.tier, a.kind) for _, a in stream.alarms} == {("small", "acceptance")}
    line = alarm.describe()
    assert "tier small" in line and "acceptance" in line and "UTC" in line and "80." in line
    assert alarm.as_dict()["describe"] == line


def test_a_slow_drift_is_caught_against_the_frozen_reference() -> None:
    """A moving reference would follow it; the frozen one sees it once it passes the bound."""
    state = DriftState(DriftConfig())
    stream = Stream(state, {"small": 0.8, "large": 0.9}, seed=3)
    stream.run(900.0)
    for step in range(30):  # 0.8 down to 0.5 over 30 windows: 1 point a window
        stream.accept["small"] = 0.8 - 0.01 * (step + 1)
        stream.run(300.0)
    assert stream.alarms
    first_at, first = stream.alarms[0]
    assert (first.tier, first.kind) == ("small", "acceptance")
    assert first_at > NOW + 900 + 15 * 300  # never before the true rate passed the bound (0.65)
    assert first.observed < 0.8 - 0.15


def test_rebase_takes_a_change_on_purpose_as_the_new_reference() -> None:
    state = DriftState(DriftConfig())
    stream = Stream(state, {"small": 0.8, "large": 0.9}, seed=4)
    stream.run(900.0)
    stream.accept["small"] = 0.5
    stream.run(300.0)
    assert state.alarms(stream.t)
    state.rebase()
    stream.alarms.clear()
    stream.run(1800.0)
    assert stream.alarms == []
    reference = state.references["small"].tally()
    assert reference is not None and reference.rate == pytest.approx(0.5, abs=0.07)


def test_too_few_answers_raise_no_alarm() -> None:
    state = DriftState(DriftConfig())
    stream = Stream(state, {"small": 0.8, "large": 0.9}, rate=0.25)  # 75 answers a window
    stream.run(3000.0)
    stream.accept["small"] = 0.5
    stream.run(3000.0)
    assert stream.alarms == []
    assert state.references["small"].tally() is not None  # judged it could, had it seen enough


def test_the_acceptance_rule_needs_min_answers_on_both_sides_and_a_gap_clear_of_the_bound() -> None:
    config = DriftConfig(min_answers=200)
    reference = Tally(NOW, NOW + 300, count=400, hits=320)
    assert acceptance_alarm("t", reference, Tally(NOW + 300, NOW + 600, 199, 20), config) is None
    assert acceptance_alarm("t", reference, Tally(NOW + 300, NOW + 600, 200, 100), config) is not None
    # 0.8 -> 0.62: past the bound by its point estimate, not by its interval
    assert acceptance_alarm("t", reference, Tally(NOW + 300, NOW + 600, 200, 124), config) is None
    # an upward move counts as much as a downward one
    low = Tally(NOW, NOW + 300, count=400, hits=160)
    alarm = acceptance_alarm("t", low, Tally(NOW + 300, NOW + 600, 400, 320), config)
    assert alarm is not None and alarm.interval[0] > config.acceptance_bound


# --- calibration --------------------------------------------------------------------------------------


def labelled_stream(state: DriftState, labels: int, *, delay_s: float = 120.0, confidence: float = 0.9) -> None:
    """``labels`` requests accepted by ``small`` at ``confidence``, one a second, 3 in 5 labelled correct."""
    for i in range(labels):
        state.observe_result([("small", True, confidence)], f"r{i}", NOW + i)
    for i in range(labels):
        state.observe_label(f"r{i}", i % 5 < 3, NOW + i + delay_s)


def test_confidence_0_9_at_60_percent_correct_over_enough_labels_raises_a_calibration_alarm() -> None:
    config = DriftConfig()
    state = DriftState(config)
    labelled_stream(state, 200)
    alarms = state.alarms(NOW + 400)
    assert [(a.tier, a.kind) for a in alarms] == [("small", "calibration")]
    (alarm,) = alarms
    assert alarm.count == 200
    assert alarm.reference == pytest.approx(0.9)
    assert alarm.observed == pytest.approx(0.6)
    assert alarm.bound == config.calibration_bound
    assert alarm.interval[1] < -config.calibration_bound
    assert NOW - 60 <= alarm.window_start <= NOW and NOW + 199 < alarm.window_end <= NOW + 400
    assert "accuracy 60.0%" in alarm.describe() and "90.0%" in alarm.describe()


def test_a_handful_of_labels_raises_no_calibration_alarm() -> None:
    state = DriftState(DriftConfig())
    labelled_stream(state, 10)
    assert state.alarms(NOW + 400) == ()
    # not even with the minimum count lowered: 6 of 10 could be a calibrated 0.9 tier's bad luck
    lowered = DriftState(DriftConfig(min_labels=5))
    labelled_stream(lowered, 10)
    assert lowered.alarms(NOW + 400) == ()
    assert calibration_alarm("small", Tally(NOW, NOW + 10, 10, 6, 9.0), DriftConfig(min_labels=5)) is None


def test_labels_later_than_the_horizon_are_ignored() -> None:
    config = DriftConfig(label_horizon_s=600.0)
    state = DriftState(config)
    labelled_stream(state, 200, delay_s=900.0)
    assert state.alarms(NOW + 1200) == ()
    assert state.dropped["label_late"] + state.dropped["label_unmatched"] == 200
    assert state.labelled["small"].tally(NOW + 1200).count == 0
    # the same labels inside the horizon do alarm
    inside = DriftState(config)
    labelled_stream(inside, 200, delay_s=300.0)
    assert [a.kind for a in inside.alarms(NOW + 600)] == ["calibration"]


def test_a_label_counts_once_and_only_for_an_accepted_answer_it_judges() -> None:
    state = DriftState(DriftConfig())
    state.observe_result([("small", False, 0.3), ("large", True, 0.9)], "r1", NOW)
    state.observe_result([("small", False, 0.3), ("large", False, 0.4)], "r2", NOW)
    state.observe_label("r1", True, NOW + 10, tier="small")  # an exploration copy's label: not this answer
    state.observe_label("r1", True, NOW + 20)
    state.observe_label("r1", False, NOW + 30)  # a second label on the same request
    state.observe_label("r2", True, NOW + 40)  # exhausted: nothing accepted to calibrate
    state.observe_label("nobody", True, NOW + 50)
    assert state.labelled["large"].tally(NOW + 60).count == 1
    assert state.labelled["small"].tally(NOW + 60).count == 0
    assert state.dropped == {"label_other_tier": 1, "label_unmatched": 3}


# --- memory -------------------------------------------------------------------------------------------


def test_memory_stays_bounded_on_a_long_stream() -> None:
    config = DriftConfig(window_s=60.0, buckets=12, label_horizon_s=120.0, calibration_window_s=120.0, max_pending=1000)
    state = DriftState(config)
    stream = Stream(state, {"small": 0.8, "mid": 0.6, "large": 0.95}, rate=20.0, label_share=0.1)
    most = {"tiers": 0, "buckets": 0, "pending": 0}
    for _ in range(50):
        stream.run(60.0, check_every_s=60.0)
        most = {k: max(most[k], v) for k, v in state.footprint().items()}
    assert stream.requests >= 59_000
    assert most["pending"] <= config.max_pending
    assert state.dropped["pending_cap"] > 0  # 20/s for 120 s is more than the cap: the cap held
    assert most["tiers"] == 3
    assert most["buckets"] <= 3 * 2 * (config.buckets + 1)


def test_tier_names_past_the_cap_are_dropped() -> None:
    state = DriftState(DriftConfig())
    for i in range(MAX_TIERS + 36):
        state.observe_result([(f"t{i}", True, 0.9)], f"r{i}", NOW + i)
    assert state.footprint()["tiers"] == MAX_TIERS
    assert state.dropped["tier_cap"] == 36


# --- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_s": 0}, "window_s"),
        ({"window_s": float("inf")}, "window_s"),
        ({"label_horizon_s": -1}, "label_horizon_s"),
        ({"calibration_window_s": float("nan")}, "calibration_window_s"),
        ({"acceptance_bound": 0}, "acceptance_bound"),
        ({"calibration_bound": 1.0}, "calibration_bound"),
        ({"confidence": 1.0}, "confidence"),
        ({"min_answers": 0}, "min_answers"),
        ({"min_labels": 2.5}, "min_labels"),
        ({"max_pending": 0}, "max_pending"),
        ({"buckets": True}, "buckets"),
    ],
)
def test_a_bad_config_is_refused_naming_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftConfig(**kwargs)  # type: ignore[arg-type]


# --- what is observed ---------------------------------------------------------------------------------


def test_a_result_gives_its_verdicts_and_its_delivered_accepted_answer() -> None:
    result = Result(
        request_id="r1",
        status=Status.OK,
        tier="small",  # the policy accepted on large but delivered small's earlier answer
        confidence=0.7,
        path=("small", "large"),
        why=(
            Decision("route", "p", "start", "small"),
            Decision("verify", "p", "escalate", "small", 0.7),
            Decision("verify", "p", "accept", "large", 0.95),
        ),
    )
    assert verdicts_of(result) == (("small", False, 0.7), ("large", True, 0.95))
    assert delivered_of(result) == ("small", 0.7)
    exhausted = Result(request_id="r2", status=Status.EXHAUSTED, tier="large", confidence=0.4)
    assert delivered_of(exhausted) is None
    expired = Result(request_id="r3", status=Status.EXPIRED, why=(Decision("verify", "p", "expired", "small", 0.2),))
    assert verdicts_of(expired) == (("small", False, 0.2),)

    state = DriftState(DriftConfig())
    state.observe(result, NOW)
    assert state.pending["r1"] == (NOW, "small", 0.7)
    tally = state.recent["large"].tally(NOW + 1)
    assert (tally.count, tally.hits) == (1, 1)
    state.observe_feedback(Feedback(request_id="r1", source="test", at=NOW, score=0.5), NOW + 5)
    assert state.labelled["small"].tally(NOW + 10).hits == 1


def test_labels_read_correct_or_a_score_and_nothing_else() -> None:
    def label(**kwargs: object) -> Feedback:
        return Feedback(request_id="r", source="test", at=NOW, **kwargs)  # type: ignore[arg-type]

    assert label_of(label(correct=False)) is False
    assert label_of(label(score=0.5)) is True
    assert label_of(label(score=0.49)) is False
    assert label_of(label(preferred_tier="large")) is None
    state = DriftState(DriftConfig())
    state.observe_feedback(label(preferred_tier="large"), NOW)
    assert state.dropped == {"label_not_correctness": 1}


def test_the_wilson_interval_holds_the_rate_and_widens_on_few_counts() -> None:
    z = DriftConfig().z
    assert z == pytest.approx(2.5758, abs=1e-3)
    few, many = wilson_interval(6, 10, z), wilson_interval(600, 1000, z)
    assert few[0] < many[0] < 0.6 < many[1] < few[1]
    assert wilson_interval(0, 0, z) == (0.0, 1.0)
    assert wilson_interval(10, 10, z)[1] == 1.0
