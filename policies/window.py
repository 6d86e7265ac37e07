"""The window of results and its statistics, written once for the budget controller and for ``status``.

Both ask the same questions of the last few seconds of results: how many, at what cost, how
slow, how often escalated, which tiers did the work. They used to answer them separately, and
"tier share" meant two things: the share a tier *answered* (status) and the share whose path
*visited* it (the controller). Here they are two functions with names that say which:

* :func:`answered_share` — share of results whose answering tier (``Result.tier``) is t.
  Rejected results have no tier, so the shares may sum below 1.
* :func:`visited_share` — share of results whose path includes t. An escalated result
  counts at every tier it went through, so the shares may sum above 1.

:func:`percentile` is the one percentile of the repository: numpy's default definition
(linear interpolation between the two nearest ranks, ``method="linear"``).

Everything is pure: the clock and the results are passed in.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from topics.messages import Result

SUMMARY_PERCENTILES = (50, 95, 99)
"""The percentiles a latency summary shows (``p50``, ``p95``, ``p99``)."""


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (``q`` in percent, 0..100) of ``values``; 0.0 when there are none.

    numpy's default definition (linear interpolation between closest ranks), so a percentile
    means the same in the controller, ``status``, the run report and the load tests. No values
    give 0.0 rather than an error: every report here shows an empty window as zeros.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = np.fromiter(values, dtype=float)
    return float(np.percentile(data, q)) if data.size else 0.0


def percentile_summary(values: Iterable[float], digits: int = 2) -> dict[str, float]:
    """``{"p50", "p95", "p99"}`` of ``values`` (see :func:`percentile`), rounded to ``digits``."""
    data = list(values)
    return {f"p{q}": round(percentile(data, q), digits) for q in SUMMARY_PERCENTILES}


def in_window(results: Iterable[Result], now: float, span_s: float) -> list[Result]:
    """The results completed in the last ``span_s`` seconds before ``now`` (later ones too: clock skew)."""
    cutoff = now - span_s
    return [r for r in results if r.completed_at >= cutoff]


def latency_at(results: Sequence[Result], quantile: float) -> float:
    """End-to-end latency at ``quantile`` (0..1) of ``results``; 0 when there are none."""
    return percentile((r.latency_ms for r in results), quantile * 100.0)


def _tier_names(tiers: Sequence[str], seen: Iterable[str]) -> list[str]:
    """``tiers`` in their order, then any other tier the results name, sorted (so none is hidden)."""
    return [*tiers, *sorted(set(seen) - set(tiers))]


def answered_share(results: Sequence[Result], tiers: Sequence[str] = ()) -> dict[str, float]:
    """Per tier, the share of ``results`` it answered (``Result.tier``); every tier of ``tiers``
    appears, with 0.0 when it answered nothing."""
    answered = Counter(r.tier for r in results if r.tier)
    n = len(results)
    return {t: answered[t] / n if n else 0.0 for t in _tier_names(tiers, answered)}


def visited_share(results: Sequence[Result], tiers: Sequence[str] = ()) -> dict[str, float]:
    """Per tier, the share of ``results`` whose path went through it; every tier of ``tiers`` appears."""
    visited = Counter(t for r in results for t in dict.fromkeys(r.path))
    n = len(results)
    return {t: visited[t] / n if n else 0.0 for t in _tier_names(tiers, visited)}


def answers_per_second(results: Sequence[Result], span_s: float, tiers: Sequence[str] = ()) -> dict[str, float]:
    """Per tier, the answers it computed per second (one per appearance on a path: its load)."""
    computed = Counter(t for r in results for t in r.path)
    return {t: computed[t] / span_s if span_s > 0 else 0.0 for t in _tier_names(tiers, computed)}


def ended_latency_ms(results: Sequence[Result]) -> dict[str, float]:
    """Per tier, the mean end-to-end latency of the results whose path ended there."""
    ended: dict[str, list[float]] = {}
    for r in results:
        if r.path:
            ended.setdefault(r.path[-1], []).append(r.latency_ms)
    return {tier: sum(values) / len(values) for tier, values in ended.items()}


def over_latency_share(results: Sequence[Result], target_ms: float) -> float:
    """Share of ``results`` slower than ``target_ms`` (what the controller's μ steers)."""
    return sum(1 for r in results if r.latency_ms > target_ms) / len(results) if results else 0.0


@dataclass(frozen=True)
class WindowStats:
    """What one window of results says; every rate is per second of ``span_s``."""

    count: int
    span_s: float
    rate: float
    by_status: dict[str, int]
    cost_per_request: float
    cost_per_second: float
    escalation_rate: float
    """Share of results with more than one tier on their path."""
    mean_confidence: float


def summarize(results: Sequence[Result], span_s: float) -> WindowStats:
    """The scalar statistics of one window (``results`` already limited to it) spanning ``span_s`` seconds."""
    n = len(results)
    total_cost = sum(r.total_cost for r in results)
    return WindowStats(
        count=n,
        span_s=span_s,
        rate=n / span_s if span_s > 0 else 0.0,
        by_status=dict(sorted(Counter(str(r.status) for r in results).items())),
        cost_per_request=total_cost / n if n else 0.0,
        cost_per_second=total_cost / span_s if span_s > 0 else 0.0,
        escalation_rate=sum(1 for r in results if len(r.path) > 1) / n if n else 0.0,
        mean_confidence=sum(r.confidence for r in results) / n if n else 0.0,
    )


@dataclass
class ResultsWindow:
    """Results stamped in the last ``span_s`` seconds: the controller stamps them on arrival (so
    clocks elsewhere do not matter); anything older than the span is dropped when asked."""

    span_s: float
    entries: deque[tuple[float, Result]] = field(default_factory=deque)
    started: float | None = None
    """When the first result arrived: until ``span_s`` has passed since, the window covers less."""

    def add(self, result: Result, at: float) -> None:
        self.started = at if self.started is None else self.started
        self.entries.append((at, result))

    def current(self, now: float) -> list[Result]:
        """The results of the last ``span_s`` seconds, dropping older ones (stamps must not decrease)."""
        cutoff = now - self.span_s
        while self.entries and self.entries[0][0] < cutoff:
            self.entries.popleft()
        return [result for _, result in self.entries]

    def covered_s(self, now: float) -> float:
        """Seconds the window covers at ``now``: ``span_s``, or less since the first result."""
        return max(0.0, min(self.span_s, now - self.started)) if self.started is not None else 0.0
