"""Drift of a tier: its acceptance rate against a reference, and its confidence against labels.

Why: a tier's threshold was set (by an operator, by the controller's law) for the tier as it
behaved then. When its answers change — a new model behind the same name, inputs that shift —
the same threshold means something else, and nothing else in the stream says so. Two watches,
per tier:

* **acceptance** — the share of the tier's answers the verifier accepted (every ``verify``
  decision on the tier counts, whatever the request's end), over the last ``window_s``,
  against the same share over a *reference*;
* **calibration** — over the tier's *accepted* answers that got a label, the gap between
  their mean confidence (what the tier claimed) and their accuracy (what the labels say).

**An alarm means the gap is real, not noise** (the project's "no false alarms" rule). Being past
the bound by its point estimate is not enough: the interval at ``confidence`` (0.99) of the gap
must lie wholly beyond ``±bound``. For acceptance that is Newcombe's hybrid score interval for a
difference of two proportions (built from two Wilson intervals, sound for small counts and rates
near 0 or 1); for calibration the Wilson interval of the accuracy, against the mean confidence.
The count of correct labels of a calibrated tier is Poisson-binomial, whose variance is at most
the binomial one, so the Wilson interval errs on the side of silence. Below ``min_answers``
answers (``min_labels`` labels) nothing is judged at all. When the tier is stable, the gap is 0
and the interval must also clear the bound: at 200 answers that is several standard errors away.

**The reference** is the first stretch of the tier's answers after start (or after
:meth:`DriftState.rebase`) that spans at least one window and holds at least ``min_answers``
answers; then it is frozen, and the recent window only counts answers after it (two disjoint
samples, as the interval assumes). Why frozen, not a slower moving average: a moving reference
follows a slow drift and never alarms on it, which is the drift that goes unnoticed longest; a
frozen one sees slow and sudden drift alike. The price is that a legitimate change (new
thresholds, a new model on purpose) must rebase it: whoever changes the policy calls
:meth:`DriftState.rebase`.

**Memory stays bounded on an endless stream**, whatever the rate:

* answers and labels are counted in time buckets (``buckets`` per window, aligned on the epoch),
  not kept one by one; buckets older than the window are evicted, so a tier holds at most
  ``buckets + 1`` of each kind;
* the calibration join keeps, per request whose delivered answer was accepted, its (time, tier,
  confidence) for ``label_horizon_s``, and at most ``max_pending`` of them (the oldest go
  first); a label for a request not kept (never seen, not accepted, forgotten, labelled
  already) or later than the horizon is dropped and counted in :attr:`DriftState.dropped`;
* at most :data:`MAX_TIERS` tier names are followed; answers of further ones are dropped.

Everything is pure but for :class:`DriftState`'s own update methods: no I/O, the clock is passed
in. The state is one object updated in place (like :class:`~policies.window.ResultsWindow`), not
a value copied per update: the join table holds up to ``max_pending`` entries, and copying it for
each result would cost that much per result. Stamps should not decrease (the controller stamps on
arrival); an answer older than its window when it arrives is dropped.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Literal, NamedTuple

from topics.feedback import Feedback
from topics.messages import Result, Status

DriftKind = Literal["acceptance", "calibration"]

MAX_TIERS = 64
"""Tier names followed at most: a deployment has a handful; this only bounds a stream of garbage."""
SCORE_CORRECT = 0.5
"""A ``score`` label at or above this counts as correct."""


class TierVerdict(NamedTuple):
    """One verifier decision on one tier's answer to a request."""

    tier: str
    accepted: bool
    confidence: float


@dataclass(frozen=True)
class DriftConfig:
    """What counts as drift, and how much memory the watch may hold."""

    window_s: float = 300.0
    """The recent window of the acceptance watch, and the least span of its reference."""
    acceptance_bound: float = 0.15
    """How far (as a share, 0.15 = 15 points) the acceptance rate may move from its reference."""
    calibration_bound: float = 0.1
    """How far accuracy may be from mean confidence over labelled accepted answers."""
    min_answers: int = 200
    """Fewer answers in the window (or the reference) than this: acceptance is not judged."""
    min_labels: int = 50
    """Fewer labels in the calibration window than this: calibration is not judged."""
    label_horizon_s: float = 3600.0
    """A label is joined to its answer only this long after the answer."""
    calibration_window_s: float = 3600.0
    """The calibration watch looks at the answers of this last span (labels are sparser than answers)."""
    max_pending: int = 100_000
    """Answers kept for the label join at most (the oldest are forgotten first)."""
    confidence: float = 0.99
    """Level of the intervals an alarm's gap must clear the bound with."""
    buckets: int = 60
    """Time buckets per window: the windows' resolution (window_s / buckets) and their memory."""

    def __post_init__(self) -> None:
        problems = drift_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def z(self) -> float:
        """The two-sided normal quantile of :attr:`confidence`."""
        return NormalDist().inv_cdf(0.5 + self.confidence / 2)


def drift_problems(config: DriftConfig) -> list[str]:
    """What is wrong with ``config`` (empty: nothing), each as the line a user reads."""
    problems = []
    for name in ("window_s", "label_horizon_s", "calibration_window_s"):
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            problems.append(f"{name} must be a finite number of seconds > 0, got {value!r}")
    for name in ("acceptance_bound", "calibration_bound", "confidence"):
        value = getattr(config, name)
        if not (isinstance(value, int | float) and 0 < value < 1):
            problems.append(f"{name} must be within (0, 1), got {value!r}")
    for name in ("min_answers", "min_labels", "max_pending", "buckets"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be an integer >= 1, got {value!r}")
    return problems


@dataclass(frozen=True)
class Tally:
    """Counts of one tier over one span ``[start, end)`` of epoch seconds: its answers and how many
    were accepted, or its labels and how many said correct (with the answers' confidence sum)."""

    start: float
    end: float
    count: int
    hits: int
    confidence_sum: float = 0.0

    @property
    def rate(self) -> float:
        return self.hits / self.count if self.count else 0.0

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.count if self.count else 0.0


@dataclass(frozen=True)
class DriftAlarm:
    """A tier's drift and the window that shows it.

    ``reference`` is what the tier should show (its reference acceptance rate, or for calibration
    the mean confidence it claimed) and ``observed`` what it shows (its recent acceptance rate, or
    the accuracy the labels give), over ``count`` answers (labels) from ``window_start`` to
    ``window_end``. ``interval`` is the interval at ``level`` of ``observed - reference``: it lies
    wholly beyond ``±bound``.
    """

    tier: str
    kind: DriftKind
    window_start: float
    window_end: float
    count: int
    reference: float
    observed: float
    bound: float
    interval: tuple[float, float]
    level: float
    reference_start: float | None = None
    """Acceptance: the reference's span and count (``None``/0 for calibration)."""
    reference_end: float | None = None
    reference_count: int = 0

    @property
    def gap(self) -> float:
        return self.observed - self.reference

    def describe(self) -> str:
        """One line for an operator: what moved, by how much, over which window, against which bound."""
        low, high = self.interval
        beyond = (
            f"{_points(self.gap)}, beyond ±{self.bound * 100:.1f} points "
            f"({self.level:.0%} interval {_points(low)} to {_points(high)})"
        )
        window = f"{_clock(self.window_start)} to {_clock(self.window_end)} UTC"
        if self.kind == "acceptance":
            since = ""
            if self.reference_start is not None and self.reference_end is not None:
                since = (
                    f" ({self.reference_count} answers, {_clock(self.reference_start)} to "
                    f"{_clock(self.reference_end)} UTC)"
                )
            return (
                f"tier {self.tier}: acceptance {self.observed:.1%} of {self.count} answers from {window}, "
                f"against {self.reference:.1%} in its reference{since}: {beyond}"
            )
        return (
            f"tier {self.tier}: accuracy {self.observed:.1%} on {self.count} labelled accepted answers from "
            f"{window}, whose mean confidence is {self.reference:.1%}: {beyond}"
        )

    def as_dict(self) -> dict[str, object]:
        """Plain values for a report (floats rounded to what a reader needs)."""
        return {
            "tier": self.tier,
            "kind": self.kind,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "count": self.count,
            "reference": round(self.reference, 4),
            "observed": round(self.observed, 4),
            "bound": self.bound,
            "interval": [round(self.interval[0], 4), round(self.interval[1], 4)],
            "level": self.level,
            "reference_start": self.reference_start,
            "reference_end": self.reference_end,
            "reference_count": self.reference_count,
            "describe": self.describe(),
        }


def _points(share: float) -> str:
    return f"{share * 100:+.1f} points"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- the statistics (pure) ------------------------------------------------------------------------


def wilson_interval(hits: int, count: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / count`` at normal quantile ``z``
    (``(0, 1)`` for no count): unlike the normal one, right for small counts and rates near 0 or 1."""
    if count <= 0:
        return 0.0, 1.0
    p = hits / count
    z2 = z * z
    denominator = 1 + z2 / count
    centre = (p + z2 / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z2 / (4 * count * count)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(observed: Tally, reference: Tally, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``observed.rate - reference.rate`` (two independent
    samples), built from the two Wilson intervals."""
    p1, p2 = observed.rate, reference.rate
    l1, u1 = wilson_interval(observed.hits, observed.count, z)
    l2, u2 = wilson_interval(reference.hits, reference.count, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def _beyond(interval: tuple[float, float], bound: float) -> bool:
    return interval[0] > bound or interval[1] < -bound


def acceptance_alarm(tier: str, reference: Tally, recent: Tally, config: DriftConfig) -> DriftAlarm | None:
    """The alarm when ``tier``'s acceptance rate over ``recent`` moved beyond the bound from
    ``reference``'s, with the interval of the move clear of it; ``None`` otherwise or on too few answers."""
    if reference.count < config.min_answers or recent.count < config.min_answers:
        return None
    interval = difference_interval(recent, reference, config.z)
    if not _beyond(interval, config.acceptance_bound):
        return None
    return DriftAlarm(
        tier=tier,
        kind="acceptance",
        window_start=recent.start,
        window_end=recent.end,
        count=recent.count,
        reference=reference.rate,
        observed=recent.rate,
        bound=config.acceptance_bound,
        interval=interval,
        level=config.confidence,
        reference_start=reference.start,
        reference_end=reference.end,
        reference_count=reference.count,
    )


def calibration_alarm(tier: str, labelled: Tally, config: DriftConfig) -> DriftAlarm | None:
    """The alarm when the accuracy of ``tier``'s labelled accepted answers is beyond the bound from
    their mean confidence, with its Wilson interval clear of it; ``None`` otherwise or on too few labels."""
    if labelled.count < config.min_labels:
        return None
    claimed = labelled.mean_confidence
    low, high = wilson_interval(labelled.hits, labelled.count, config.z)
    interval = (low - claimed, high - claimed)
    if not _beyond(interval, config.calibration_bound):
        return None
    return DriftAlarm(
        tier=tier,
        kind="calibration",
        window_start=labelled.start,
        window_end=labelled.end,
        count=labelled.count,
        reference=claimed,
        observed=labelled.rate,
        bound=config.calibration_bound,
        interval=interval,
        level=config.confidence,
    )


# --- what is observed (pure) ---------------------------------------------------------------------


def verdicts_of(result: Result) -> tuple[TierVerdict, ...]:
    """Every verifier decision in ``result.why``: per tier that answered, whether it was accepted.

    Only ``accept`` is an acceptance; ``escalate``, ``stop``, ``exhausted`` and ``expired`` are all
    the policy declining the answer (the verifier accepts before it looks at the deadline).
    """
    return tuple(
        TierVerdict(d.tier, d.action == "accept", d.confidence if d.confidence is not None else 0.0)
        for d in result.why
        if d.stage == "verify" and d.tier
    )


def delivered_of(result: Result) -> tuple[str, float] | None:
    """The (tier, confidence) of the accepted answer ``result`` delivered, or ``None`` when none was
    accepted. The delivered tier, not the accepting decision's: a policy may deliver an earlier answer."""
    if result.status is not Status.OK or not result.tier:
        return None
    return result.tier, result.confidence


def label_of(feedback: Feedback) -> bool | None:
    """Whether ``feedback`` says the answer was correct (a ``score`` counts at >= :data:`SCORE_CORRECT`);
    ``None`` for a label that judges no answer's correctness (``preferred_tier``)."""
    if feedback.correct is not None:
        return feedback.correct
    if feedback.score is not None:
        return feedback.score >= SCORE_CORRECT
    return None


# --- the state -----------------------------------------------------------------------------------


@dataclass
class _Buckets:
    """Counts per time bucket (index ``floor(at / width)``) over the last ``span`` buckets: memory
    bounded by the buckets of one window, whatever the rate."""

    width: float
    span: int
    counts: dict[int, list[float]] = field(default_factory=dict)
    """Bucket index -> [count, hits, confidence sum]."""
    floor: int | None = None
    """No bucket below this index is kept (it left the window)."""

    def index(self, at: float) -> int:
        return math.floor(at / self.width)

    def evict(self, now: float) -> None:
        low = self.index(now) - self.span + 1
        if self.floor is None or low > self.floor:
            for index in [i for i in self.counts if i < low]:
                del self.counts[index]
            self.floor = low

    def add(self, at: float, hit: bool, confidence: float, now: float) -> bool:
        """Count one answer (label) stamped ``at``, seen at ``now``; False when ``at`` left the window."""
        self.evict(now)
        index = self.index(at)
        if self.floor is not None and index < self.floor:
            return False
        bucket = self.counts.setdefault(index, [0.0, 0.0, 0.0])
        bucket[0] += 1
        bucket[1] += hit
        bucket[2] += confidence
        return True

    def tally(self, now: float, since: int | None = None) -> Tally:
        """The counts of the window at ``now`` (from bucket ``since`` on, when given), over the span
        of the buckets that hold them (the window when none does)."""
        low = self.index(now) - self.span + 1
        if since is not None:
            low = max(low, since)
        held = [i for i in self.counts if i >= low]
        if not held:
            return Tally(start=low * self.width, end=now, count=0, hits=0)
        count = hits = 0
        confidence = 0.0
        for index in held:
            bucket = self.counts[index]
            count += int(bucket[0])
            hits += int(bucket[1])
            confidence += bucket[2]
        start = min(held) * self.width
        end = max(start, min(now, (max(held) + 1) * self.width))
        return Tally(start=start, end=end, count=count, hits=hits, confidence_sum=confidence)


@dataclass
class _Reference:
    """A tier's reference acceptance: counted from its first answer until it spans a window and holds
    ``min_answers`` answers, then frozen."""

    first_at: float | None = None
    first: int = 0
    """Bucket index of the first answer counted."""
    count: int = 0
    hits: int = 0
    end: int | None = None
    """Bucket index at which it froze (the recent window counts from there); ``None``: still counting."""
    end_at: float = 0.0

    def add(self, at: float, index: int, accepted: bool, config: DriftConfig, width: float) -> None:
        if self.end is not None:
            return
        if self.first_at is None:
            self.first_at, self.first = at, index
        elif (index - self.first) * width >= config.window_s and self.count >= config.min_answers:
            self.end, self.end_at = index, index * width
            return
        self.count += 1
        self.hits += accepted

    def tally(self) -> Tally | None:
        """The frozen reference, or ``None`` while it is still counting."""
        if self.end is None or self.first_at is None:
            return None
        return Tally(start=self.first_at, end=self.end_at, count=self.count, hits=self.hits)


@dataclass
class DriftState:
    """What the drift watch has seen: per tier, its answers' acceptance in time buckets and its
    reference, its labelled accepted answers in time buckets, and the answers awaiting a label.

    Fed with :meth:`observe` (or :meth:`observe_result`) per Result and :meth:`observe_feedback`
    (or :meth:`observe_label`) per label; asked with :meth:`alarms`. See the module docstring for
    what bounds its memory.
    """

    config: DriftConfig = field(default_factory=DriftConfig)
    recent: dict[str, _Buckets] = field(default_factory=dict)
    references: dict[str, _Reference] = field(default_factory=dict)
    labelled: dict[str, _Buckets] = field(default_factory=dict)
    pending: OrderedDict[str, tuple[float, str, float]] = field(default_factory=OrderedDict)
    """Request id -> (when, tier, confidence) of its accepted delivered answer, oldest first."""
    dropped: Counter[str] = field(default_factory=Counter)
    """What was not counted, by reason: ``tier_cap``, ``answer_too_old``, ``pending_cap`` (answers
    forgotten before their horizon), ``label_unmatched``, ``label_late``, ``label_other_tier``,
    ``label_too_old``, ``label_not_correctness``."""

    def _followed(self, tier: str) -> bool:
        if tier in self.recent:
            return True
        if len(self.recent) >= MAX_TIERS:
            self.dropped["tier_cap"] += 1
            return False
        config = self.config
        self.recent[tier] = _Buckets(config.window_s / config.buckets, config.buckets)
        self.references[tier] = _Reference()
        self.labelled[tier] = _Buckets(config.calibration_window_s / config.buckets, config.buckets)
        return True

    def observe_result(
        self,
        verdicts: Iterable[tuple[str, bool, float]],
        request_id: str,
        at: float,
        delivered: tuple[str, float] | None = None,
    ) -> None:
        """Count one request's verdicts (tier, accepted, confidence), stamped ``at``, and keep its
        accepted answer for a label: ``delivered`` (tier, confidence), by default the accepted verdict."""
        accepted: tuple[str, float] | None = None
        for tier, ok, confidence in verdicts:
            if ok:
                accepted = (tier, confidence)
            if not self._followed(tier):
                continue
            buckets = self.recent[tier]
            if not buckets.add(at, ok, confidence, at):
                self.dropped["answer_too_old"] += 1
                continue
            self.references[tier].add(at, buckets.index(at), ok, self.config, buckets.width)
        self._forget(at)
        kept = delivered if delivered is not None else accepted
        if kept is not None and kept[0] in self.recent:
            self.pending[request_id] = (at, kept[0], kept[1])
            self.pending.move_to_end(request_id)
            while len(self.pending) > self.config.max_pending:
                self.pending.popitem(last=False)
                self.dropped["pending_cap"] += 1

    def observe(self, result: Result, at: float) -> None:
        """:meth:`observe_result` of one Result, as the controller reads it, stamped ``at`` on arrival."""
        self.observe_result(verdicts_of(result), result.request_id, at, delivered_of(result))

    def observe_label(self, request_id: str, correct: bool, at: float, tier: str = "") -> None:
        """Join one label, received ``at``, to its request's accepted answer and count it there, once.
        ``tier``: the tier whose answer it judges ("" the delivered one); another tier's is not counted."""
        entry = self.pending.get(request_id)
        if entry is None:
            self.dropped["label_unmatched"] += 1
        elif tier and tier != entry[1]:
            self.dropped["label_other_tier"] += 1  # kept: the delivered answer may still get its own label
        else:
            del self.pending[request_id]
            answered_at, answered_by, confidence = entry
            if at - answered_at > self.config.label_horizon_s:
                self.dropped["label_late"] += 1
            elif not self.labelled[answered_by].add(answered_at, correct, confidence, at):
                self.dropped["label_too_old"] += 1
        self._forget(at)

    def observe_feedback(self, feedback: Feedback, at: float) -> None:
        """:meth:`observe_label` of one Feedback record, received ``at`` (``preferred_tier`` labels say
        nothing of correctness and are not counted)."""
        correct = label_of(feedback)
        if correct is None:
            self.dropped["label_not_correctness"] += 1
            return
        self.observe_label(feedback.request_id, correct, at, feedback.tier)

    def _forget(self, now: float) -> None:
        """Drop the answers awaiting a label past their horizon (the oldest come first)."""
        horizon = now - self.config.label_horizon_s
        while self.pending:
            oldest = next(iter(self.pending.values()))
            if oldest[0] >= horizon:
                break
            self.pending.popitem(last=False)

    def rebase(self, tiers: Iterable[str] | None = None) -> None:
        """Start the acceptance reference of ``tiers`` (default: all) again from their next answers:
        after a change on purpose (new thresholds, a new model), so it is not taken for drift."""
        for tier in self.references if tiers is None else tiers:
            if tier in self.references:
                self.references[tier] = _Reference()

    def alarms(self, now: float) -> tuple[DriftAlarm, ...]:
        """The tiers drifting at ``now``, by tier then kind (acceptance first). Changes nothing: an
        alarm holds for as long as its window shows it, so asking again repeats it."""
        found: list[DriftAlarm] = []
        for tier in sorted(self.recent):
            reference = self.references[tier].tally()
            if reference is not None:
                recent = self.recent[tier].tally(now, since=self.references[tier].end)
                alarm = acceptance_alarm(tier, reference, recent, self.config)
                if alarm is not None:
                    found.append(alarm)
            alarm = calibration_alarm(tier, self.labelled[tier].tally(now), self.config)
            if alarm is not None:
                found.append(alarm)
        return tuple(found)

    def footprint(self) -> dict[str, int]:
        """How much the state holds: tiers, buckets (both kinds, all tiers) and answers awaiting a label."""
        return {
            "tiers": len(self.recent),
            "buckets": sum(len(b.counts) for b in (*self.recent.values(), *self.labelled.values())),
            "pending": len(self.pending),
        }
