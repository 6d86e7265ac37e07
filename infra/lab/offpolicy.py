"""Off-policy estimates of a candidate policy from a trace built from the stream.

A stream trace (``tierflow trace --from-kafka``) has, per request, rows only for the tiers that
ran: the live policy's path (``propensity`` 1) and, for a random share ε of requests, every other
allowed tier too ("explore all", ``propensity`` ε). A candidate policy π is run on each request
with the stream's own decision code (:func:`infra.lab.simulate.run_request`), answering from the
rows present. Where π calls only tiers that have rows its outcome (correct, cost) is known; the
chance that all the tiers S_i it called were recorded is P_i = min over S_i of the rows'
propensity (exact under explore-all: the tiers off the live path are recorded together, with
probability ε). Where π calls a tier without a row, its outcome on that request is unknown.

Two estimators of π's mean value v (accuracy; separately mean cost per request) over all N
requests of the test split, both unbiased:

* IPS (inverse propensity): (1/N) Σ_i 1[observed_i] · v_i / P_i.
* DR (doubly robust): (1/N) Σ_i [ m̂_i + 1[observed_i] · (v_i - m̂_i) / P_i ], with an outcome model
  m̂ fitted on the train split only (:class:`OutcomeModel`: π's mean per live path on the train
  split's explored items). m̂ does not need to be right for DR to be unbiased; the closer it is,
  the less the 1/P_i weights inflate the variance.

Both are means of per-request terms, so their confidence intervals are ``scipy.stats.bootstrap``'s
over requests. On a trace where every request has every tier (all propensities 1) each term is
v_i itself, and the estimate is the plain simulation's figure.

Fitting needs items every tier answered. In a stream trace those are the explored requests (a
uniform sample of traffic when ε is constant) and the requests whose live path was every tier
(all of them: escalated to the top, the hard ones). :func:`explored_rows` keeps the first and a
share ε of the second, so the items a method is fitted on are again a uniform sample.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from infra.lab.features import query_vectors
from infra.lab.simulate import Outcome, run_request
from infra.lab.table import TraceTable
from policies.base import PostHocPolicy, PreCallPolicy, TierInfo
from policies.decisions import hop_limit
from topics.draws import drawn
from topics.errors import DataError
from topics.messages import Status
from topics.traces import TraceRow, models_of

Estimator = Literal["ips", "dr"]
ESTIMATORS: tuple[Estimator, ...] = ("ips", "dr")
FloatArray = npt.NDArray[np.float64]
Stratum = tuple[str, ...]

NO_EXPLORED_ITEM = (
    "no request of this trace ran on every tier: turn exploration on ([exploration] share) and label some answers"
)
_KEEP_SALT = b"tierflow-lab-explored-v1\x00"
# scipy 1.15 renamed bootstrap's random_state to rng; pyproject allows older ones
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@dataclass(frozen=True)
class Logged:
    """One request of a trace: the rows of the tiers that ran on it (a complete trace: every tier)."""

    item: str
    rows: Mapping[str, TraceRow]

    @property
    def input(self) -> str:
        return next(iter(self.rows.values())).input

    def live_path(self) -> Stratum:
        """The tiers recorded for sure (propensity 1): the live policy's path, in trace order."""
        return tuple(tier for tier, row in self.rows.items() if row.propensity >= 1.0)


@dataclass(frozen=True, slots=True)
class Partial:
    """A candidate policy on one logged request."""

    item: str
    outcome: Outcome | None
    """None: the policy called a tier that did not run on this request."""
    propensity: float
    """With an outcome: the probability that every tier the policy called was recorded (min over them)."""

    @property
    def observed(self) -> bool:
        return self.outcome is not None


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean per request with its bootstrap interval (``low`` = ``high`` where every term is equal)."""

    value: float
    low: float
    high: float
    method: str
    """``ips`` or ``dr``."""

    @property
    def interval(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True, slots=True)
class PolicyEstimate:
    accuracy: Estimate
    cost: Estimate
    """Mean cost per request."""
    observed: int
    """Requests whose outcome under the policy the trace shows."""
    requests: int
    """All requests of the split: the N every estimate averages over."""


@dataclass(frozen=True)
class OutcomeModel:
    """DR's m̂: a candidate's mean (accuracy, cost) per live path, fitted on train items only.

    The live path says a lot about a request (escalated to the top: a hard one), and it is known
    on every request, explored or not. A path seen on fewer than ``min_count`` train items uses
    the overall mean.
    """

    overall: tuple[float, float]
    by_path: Mapping[Stratum, tuple[float, float]]

    @classmethod
    def fit(
        cls, paths: Sequence[Stratum], correct: npt.ArrayLike, cost: npt.ArrayLike, min_count: int = 20
    ) -> OutcomeModel:
        acc = np.asarray(correct, dtype=float)
        spend = np.asarray(cost, dtype=float)
        if not acc.size:
            raise DataError("the outcome model needs train items")
        groups: dict[Stratum, list[int]] = {}
        for i, path in enumerate(paths):
            groups.setdefault(path, []).append(i)
        by_path = {
            path: (float(acc[index].mean()), float(spend[index].mean()))
            for path, index in groups.items()
            if len(index) >= min_count
        }
        return cls((float(acc.mean()), float(spend.mean())), by_path)

    def __call__(self, item: Logged) -> tuple[float, float]:
        return self.by_path.get(item.live_path(), self.overall)


def logged_items(rows: Iterable[TraceRow], tiers: Sequence[str]) -> list[Logged]:
    """The requests of a trace in first-appearance order, each with its rows of ``tiers`` (in that
    order); a request without a row of ``tiers`` is left out, a repeated (item, tier) refused."""
    wanted = set(tiers)
    by_item: dict[str, dict[str, TraceRow]] = {}
    for number, row in enumerate(rows, start=1):
        per = by_item.setdefault(row.item_id, {})
        if row.tier in per:
            raise DataError(f"row {number}: a second row for item {row.item_id!r} and tier {row.tier!r}")
        per[row.tier] = row
    return [
        Logged(item, {t: per[t] for t in tiers if t in per}) for item, per in by_item.items() if wanted & per.keys()
    ]


def logged_of(table: TraceTable) -> list[Logged]:
    """A complete table's items as logged requests."""
    return [Logged(item, dict(zip(table.tiers, rows, strict=True))) for item, rows in zip(table.items, table.rows,
                                                                                          strict=True)]  # fmt: skip


def is_stream_trace(rows: Sequence[TraceRow], tiers: Sequence[str]) -> bool:
    """Whether a row of ``tiers`` was recorded by chance (propensity < 1) or a request lacks one of them."""
    kept = [row for row in rows if row.tier in set(tiers)]
    if any(row.propensity < 1.0 for row in kept):
        return True
    count: dict[str, int] = {}
    for row in kept:
        count[row.item_id] = count.get(row.item_id, 0) + 1
    return any(n < len(tiers) for n in count.values())


def exploration_share(rows: Iterable[TraceRow]) -> float | None:
    """The median propensity of the rows recorded by chance: the trace's ε (None: no such row)."""
    shares = [row.propensity for row in rows if row.propensity < 1.0]
    return float(np.median(shares)) if shares else None


def _kept(item: str, share: float) -> bool:
    return drawn(_KEEP_SALT, item, share)


def explored_rows(rows: Sequence[TraceRow], tiers: Sequence[str]) -> list[TraceRow]:
    """The rows of the requests to fit on: every tier of ``tiers`` ran on them, uniformly sampled.

    A request that has every tier was explored (some row has propensity < 1) or its live path was
    every tier (always recorded whole, so over-represented by 1/ε); the second kind is kept with
    probability ε, the trace's median exploration share, by a hash of the item id (stable). A DataError
    says how to get explored requests when there are none.
    """
    share = exploration_share(row for row in rows if row.tier in set(tiers))
    keep: set[str] = set()
    for request in logged_items(rows, tiers):
        if len(request.rows) < len(tiers):
            continue
        explored = any(row.propensity < 1.0 for row in request.rows.values())
        if explored or (share is not None and _kept(request.item, share)):
            keep.add(request.item)
    if not keep:
        raise DataError(NO_EXPLORED_ITEM)
    return [row for row in rows if row.item_id in keep and row.tier in set(tiers)]


def check_tiers(rows: Sequence[TraceRow], tiers: Sequence[str]) -> tuple[str, ...]:
    """``tiers`` (default: the trace's, in trace order), each one the trace has."""
    present = models_of(rows)
    order = tuple(tiers) or tuple(present)
    unknown = sorted(set(order) - set(present))
    if unknown:
        raise DataError(f"the trace has no tier {unknown[0]!r}; it has: {', '.join(present)}")
    return order


def tier_infos(items: Sequence[Logged], tiers: Sequence[str]) -> tuple[TierInfo, ...]:
    """The tiers with their mean cost per call over all traffic: each recorded row weighted by
    1/propensity (the rows explored by chance stand for the requests that were not); with every
    propensity 1 exactly :meth:`TraceTable.tier_infos`."""
    infos = []
    for tier in tiers:
        rows = [item.rows[tier] for item in items if tier in item.rows]
        if not rows:
            raise DataError(f"no request of this split ran tier {tier!r}")
        weights = np.array([1.0 / row.propensity for row in rows])
        infos.append(TierInfo(tier, float(np.average([row.cost for row in rows], weights=weights))))
    return tuple(infos)


def query_table(items: Sequence[Logged]) -> TraceTable:
    """The requests' queries in the shape :func:`~infra.lab.features.query_vectors` reads (one row
    per item, ``rows[i][0].input``), so routers see the vectors ``simulate`` would give them."""
    return TraceTable(("query",), tuple(i.item for i in items), tuple((next(iter(i.rows.values())),) for i in items))


def simulate_partial(
    items: Sequence[Logged],
    pre: PreCallPolicy,
    post: PostHocPolicy,
    tiers: tuple[TierInfo, ...],
    max_hops: int | None = None,
) -> list[Partial]:
    """Each request through the stream's decision code (:func:`~infra.lab.simulate.run_request`, the
    loop ``simulate`` runs), answering from the rows present; ``tiers`` as :func:`tier_infos` gives."""
    max_hops = max_hops or hop_limit(len(tiers))
    vectors = None
    if pre.needs_features:
        vectors = query_vectors(query_table(items), pre.embedding, prefix=pre.query_prefix)
    out = []
    for i, item in enumerate(items):
        vector = None if vectors is None else vectors[i]
        outcome = run_request(item.item, item.input, item.rows.get, pre, post, tiers, max_hops, vector)
        if isinstance(outcome, Outcome):
            propensity = min((item.rows[t].propensity for t in outcome.path), default=1.0)
            out.append(Partial(item.item, outcome, propensity))
        else:
            out.append(Partial(item.item, None, 0.0))
    return out


def single_tier(items: Sequence[Logged], tier: str) -> list[Partial]:
    """The single-tier baseline: call ``tier`` and deliver its answer (observed where it ran)."""
    out = []
    for item in items:
        row = item.rows.get(tier)
        if row is None:
            out.append(Partial(item.item, None, 0.0))
            continue
        outcome = Outcome(item.item, Status.OK, (tier,), tier, row.output, row.correct, row.cost)
        out.append(Partial(item.item, outcome, row.propensity))
    return out


def terms(
    partials: Sequence[Partial],
    value: Callable[[Outcome], float],
    estimator: Estimator,
    model: Sequence[float] | None = None,
) -> FloatArray:
    """Per-request terms whose mean is the estimate of ``value``'s mean over all requests.

    IPS: v_i / P_i where observed, else 0. DR: m̂_i + (v_i - m̂_i) / P_i where observed, else m̂_i,
    written v_i / P_i + m̂_i (1 - 1/P_i) so that a request observed for sure (P_i = 1) gives v_i
    exactly. ``model``: m̂_i per request (DR only).
    """
    observed = np.array([p.observed for p in partials], dtype=bool)
    weight = np.array([1.0 / p.propensity if p.observed else 0.0 for p in partials])
    v = np.array([value(p.outcome) if p.outcome is not None else 0.0 for p in partials], dtype=float)
    if estimator == "ips":
        return np.where(observed, v * weight, 0.0)
    if model is None:
        raise ValueError("the DR estimator needs an outcome model")
    m = np.asarray(model, dtype=float)
    return np.where(observed, v * weight + m * (1.0 - weight), m)


def bootstrap_mean(
    values: FloatArray, rng: np.random.Generator, method: str, confidence: float = 0.95, resamples: int = 2000
) -> Estimate:
    """The mean of per-request terms with its bootstrap interval over requests (BCa: IPS terms are
    skewed, a few 1/ε-weighted ones; percentile where BCa cannot be computed). Every term equal:
    a zero-width interval."""
    mean = float(np.mean(values))
    if values.size < 2 or np.ptp(values) == 0.0:
        return Estimate(mean, mean, mean, method)
    interval = (np.nan, np.nan)
    for how in ("BCa", "percentile"):
        result = stats.bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                 method=how, vectorized=True, batch=200, **{_RNG_KEYWORD: rng})  # fmt: skip
        interval = (float(result.confidence_interval.low), float(result.confidence_interval.high))
        if all(np.isfinite(interval)):
            break
    return Estimate(mean, interval[0], interval[1], method)


def estimate_partials(
    items: Sequence[Logged],
    partials: Sequence[Partial],
    estimator: Estimator,
    model: OutcomeModel | None,
    rng: np.random.Generator | None,
    confidence: float = 0.95,
) -> PolicyEstimate:
    """Accuracy and cost per request from a candidate's partial outcomes; ``rng`` None: point
    estimates only (the interval is the value), for the settings of a sweep nobody reads bounds of."""
    fitted = [model(item) for item in items] if model is not None else None
    parts = []
    for k, value in ((0, correct_of), (1, cost_of)):
        m = None if fitted is None else [f[k] for f in fitted]
        t = terms(partials, value, estimator, m)
        if rng is None:
            mean = float(np.mean(t))
            parts.append(Estimate(mean, mean, mean, estimator))
        else:
            parts.append(bootstrap_mean(t, rng, estimator, confidence))
    observed = sum(p.observed for p in partials)
    return PolicyEstimate(parts[0], parts[1], observed, len(partials))


def estimate_policy(
    items: Sequence[Logged],
    pre: PreCallPolicy,
    post: PostHocPolicy,
    tiers: tuple[TierInfo, ...],
    *,
    rng: np.random.Generator,
    estimator: Estimator = "dr",
    model: OutcomeModel | None = None,
    max_hops: int | None = None,
    confidence: float = 0.95,
) -> PolicyEstimate:
    """A candidate policy's accuracy and mean cost per request over ``items`` (every request of the
    split), by IPS or DR (``model``, fitted on train, required), with bootstrap intervals."""
    partials = simulate_partial(items, pre, post, tiers, max_hops)
    return estimate_partials(items, partials, estimator, model, rng, confidence)


def correct_of(outcome: Outcome) -> float:
    return float(outcome.correct)


def cost_of(outcome: Outcome) -> float:
    return outcome.cost
