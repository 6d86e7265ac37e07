"""Fitting procedures: from a train split to policies, one per swept setting.

A method is fitted once on the train split (calibrators, deferral models, answer
scorers: scikit-learn), then yields one policy pair (pre-call, post-hoc) per value
of its sweep — a threshold τ, or a cost budget for FrugalGPT. ``tierflow eval``
traces the curve over all settings; ``tierflow fit`` picks one setting for a budget
or a target accuracy on the train split.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from infra.lab.table import TraceTable
from policies.base import PostHocPolicy, PreCallPolicy
from policies.cascades import FrugalGPT, Gatekeeper, LMCascade
from policies.defaults import CheapestFirst, ConfidenceThreshold
from policies.features import DEFAULT_EMBEDDING
from policies.routers import ChainRouter
from policies.scoring import Calibrator, LinearScorer, answer_signal
from topics.errors import DataError
from topics.messages import Answer, Request, Task
from workers.backends.replay import completion_from_row
from workers.model_worker import to_answer

FloatArray = npt.NDArray[np.float64]
Pair = tuple[PreCallPolicy, PostHocPolicy]
MAX_CHAIN = 3
"""FrugalGPT searches chains of up to three tiers, as in the paper."""


def answers_of(table: TraceTable) -> list[list[Answer]]:
    """The Answer each tier gave each item, built exactly as the model worker builds it."""
    out = []
    for item, rows in zip(table.items, table.rows, strict=True):
        request = Request(id=item, input=rows[0].input, created_at=0.0)
        out.append([to_answer(Task(request=request, tier=r.tier), r.model, completion_from_row(r)) for r in rows])
    return out


def signal_matrix(answers: Sequence[Sequence[Answer]], tier: int, names: Sequence[str]) -> FloatArray:
    return np.array([[answer_signal(per[tier], name) for name in names] for per in answers], dtype=float)


def scorer_signals(table: TraceTable, tier: int) -> list[str]:
    """What a tier's scorer reads: its confidence, every feature it reports, and the query length."""
    features = sorted({name for rows in table.rows for name in rows[tier].features})
    return ["confidence", *features, "query_chars"]


def fit_scorer(x: FloatArray, correct: npt.NDArray[np.bool_], names: Sequence[str]) -> LinearScorer:
    """Logistic regression of correctness on standardised signals, exported as plain numbers."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    if correct.all() or not correct.any():  # one class: a constant scorer at the observed rate
        p = min(max(float(correct.mean()), 1e-6), 1 - 1e-6)
        return LinearScorer(tuple(names), (0.0,) * len(names), float(np.log(p / (1 - p))), tuple(mean), tuple(scale))
    model = LogisticRegression(C=1.0, max_iter=2000).fit((x - mean) / scale, correct.astype(int))
    coef = tuple(map(float, model.coef_[0]))
    return LinearScorer(tuple(names), coef, float(model.intercept_[0]), tuple(mean), tuple(scale))


def fit_calibrator(values: FloatArray, correct: npt.NDArray[np.bool_]) -> Calibrator:
    """Isotonic when there are enough examples (200+) to trust its steps, else Platt scaling."""
    if len(values) < 200 or correct.all() or not correct.any():
        return fit_calibrator_platt(values, correct)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(values, correct.astype(float))
    return Calibrator("isotonic", x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_)))


def fit_calibrator_platt(values: FloatArray, correct: npt.NDArray[np.bool_]) -> Calibrator:
    """Platt scaling: P(correct) = sigmoid(a * value + b), by (nearly unregularised) logistic regression."""
    if correct.all() or not correct.any():
        rate = min(max(float(correct.mean()), 1e-6), 1 - 1e-6)
        return Calibrator("platt", a=0.0, b=float(np.log(rate / (1 - rate))))
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4, max_iter=2000).fit(values.reshape(-1, 1), correct.astype(int))
    return Calibrator("platt", a=float(model.coef_[0][0]), b=float(model.intercept_[0]))


def threshold_grid(scores: FloatArray, n: int = 24) -> list[float]:
    """Thresholds at the quantiles of the scores, plus 'accept all' and 'accept none'."""
    qs = np.quantile(scores, np.linspace(0.0, 1.0, n)) if scores.size else np.array([])
    return sorted({0.0, *map(float, qs), 1.0 + 1e-9})


class Method(ABC):
    """A policy family with its fitting procedure."""

    name: str = ""
    family: str = "post-hoc"
    reads_queries: bool = False
    """True for methods fitted on the query vectors (the routers): ``eval`` embeds the trace first."""
    embedding: str = DEFAULT_EMBEDDING
    """The query embedding a method that reads queries is fitted on (``make_method`` sets it)."""
    needs_confidence: bool = True
    """False for methods that never read an answer's confidence (the routers that accept every answer):
    only they run on a trace without confidences."""

    @abstractmethod
    def prepare(self, train: TraceTable) -> None:
        """Fit what does not depend on the swept setting."""

    @abstractmethod
    def settings(self) -> list[float]:
        """The values to sweep (after ``prepare``)."""

    @abstractmethod
    def policies(self, setting: float) -> Pair:
        """The policy pair for one setting."""

    def describe(self) -> dict[str, Any]:
        """What ``fit`` records about the fitted method besides the chosen policy (after ``prepare``)."""
        return {}


class Threshold(Method):
    """The raw-confidence threshold cascade (the default policy), one τ for every tier."""

    name = "threshold"

    def prepare(self, train: TraceTable) -> None:
        self._tiers = train.tiers
        self._grid = threshold_grid(train.confidence[:, :-1].ravel())

    def settings(self) -> list[float]:
        return self._grid

    def policies(self, setting: float) -> Pair:
        thresholds = dict.fromkeys(self._tiers, setting)  # explicit, so the tiers' config thresholds do not apply
        return CheapestFirst(), ConfidenceThreshold(thresholds=thresholds, default_threshold=setting)


class GatekeeperMethod(Method):
    """Calibrated max-probability (or negative entropy) per tier, one τ on P(correct)."""

    name = "gatekeeper"

    def __init__(self, signal: str = "confidence") -> None:
        self.signal = signal

    def prepare(self, train: TraceTable) -> None:
        answers = answers_of(train)
        self._calibrators: dict[str, Calibrator] = {}
        scores: list[float] = []
        for t, tier in enumerate(train.tiers):
            values = signal_matrix(answers, t, [self.signal])[:, 0]
            calibrator = fit_calibrator(values, train.correct[:, t])
            self._calibrators[tier] = calibrator
            if t < len(train.tiers) - 1:
                scores.extend(calibrator(v) for v in values)
        self._grid = threshold_grid(np.array(scores))

    def settings(self) -> list[float]:
        return self._grid

    def policies(self, setting: float) -> Pair:
        return CheapestFirst(), Gatekeeper(calibrators=self._calibrators, signal=self.signal, tau=setting)


class LMCascadeMethod(Method):
    """A logistic deferral model per tier on its confidence features; defer when P(wrong) > τ."""

    name = "lm_cascade"

    def prepare(self, train: TraceTable) -> None:
        answers = answers_of(train)
        self._scorers: dict[str, LinearScorer] = {}
        wrong: list[float] = []
        for t, tier in enumerate(train.tiers):
            names = scorer_signals(train, t)
            x = signal_matrix(answers, t, names)
            scorer = fit_scorer(x, train.correct[:, t], names)
            self._scorers[tier] = scorer
            if t < len(train.tiers) - 1:
                wrong.extend(1.0 - scorer.p_correct_of(row) for row in x)
        self._grid = threshold_grid(np.array(wrong))

    def settings(self) -> list[float]:
        return self._grid

    def policies(self, setting: float) -> Pair:
        return CheapestFirst(), LMCascade(scorers=self._scorers, tau=setting)


class FrugalGPTMethod(Method):
    """Chain and per-stage thresholds maximising train accuracy under each mean-cost budget of the sweep."""

    name = "frugalgpt"

    def prepare(self, train: TraceTable) -> None:
        answers = answers_of(train)
        self._scorers: dict[str, LinearScorer] = {}
        scores = np.zeros((len(train), len(train.tiers)))
        for t, tier in enumerate(train.tiers):
            names = scorer_signals(train, t)
            x = signal_matrix(answers, t, names)
            scorer = fit_scorer(x, train.correct[:, t], names)
            self._scorers[tier] = scorer
            scores[:, t] = [scorer.p_correct_of(row) for row in x]
        self._train = train
        self._scores = scores
        costs = train.cost.mean(axis=0)
        self._budgets = sorted({float(c) for c in np.geomspace(costs.min(), costs.sum(), 16)} | set(map(float, costs)))

    def settings(self) -> list[float]:
        return self._budgets

    def search(self, budget: float) -> tuple[tuple[int, ...], tuple[float, ...], float, float]:
        """The (chain, thresholds, accuracy, cost) with the best train accuracy at mean cost <= budget."""
        correct, cost, scores = self._train.correct, self._train.cost, self._scores
        n_tiers = len(self._train.tiers)
        best: tuple[tuple[int, ...], tuple[float, ...], float, float] | None = None
        for length in range(1, min(MAX_CHAIN, n_tiers) + 1):
            for chain in itertools.combinations(range(n_tiers), length):
                grids = [threshold_grid(scores[:, t], 10) for t in chain[:-1]]
                for thresholds in itertools.product(*grids):
                    accuracy, mean_cost = _chain_outcome(chain, thresholds, scores, correct, cost)
                    if mean_cost > budget + 1e-15:
                        continue
                    if best is None or (accuracy, -mean_cost) > (best[2], -best[3]):
                        best = (chain, tuple(thresholds), accuracy, mean_cost)
        if best is None:
            cheapest = int(np.argmin(cost.mean(axis=0)))
            return (cheapest,), (), float(correct[:, cheapest].mean()), float(cost[:, cheapest].mean())
        return best

    def policies(self, setting: float) -> Pair:
        chain, thresholds, _, _ = self.search(setting)
        names = tuple(self._train.tiers[t] for t in chain)
        stages = {names[i]: thresholds[i] for i in range(len(thresholds))}
        scorers = {name: self._scorers[name] for name in names}
        return ChainRouter(chain=names), FrugalGPT(chain=names, thresholds=stages, scorers=scorers)


def _chain_outcome(
    chain: Sequence[int],
    thresholds: Sequence[float],
    scores: FloatArray,
    correct: npt.NDArray[np.bool_],
    cost: FloatArray,
) -> tuple[float, float]:
    """Accuracy and mean cost when each item stops at the first stage whose score reaches its threshold."""
    n = scores.shape[0]
    open_ = np.ones(n, dtype=bool)
    right = np.zeros(n, dtype=bool)
    spent = np.zeros(n)
    for stage, t in enumerate(chain):
        spent[open_] += cost[open_, t]
        stop = open_ if stage == len(chain) - 1 else open_ & (scores[:, t] >= thresholds[stage])
        right[stop] = correct[stop, t]
        open_ &= ~stop
    return float(right.mean()), float(spent.mean())


def check_trace(table: TraceTable) -> None:
    """The checks every fit needs: at least two tiers and both outcomes present."""
    if len(table.tiers) < 2:
        raise DataError(f"the trace has one tier ({table.tiers[0]}): a cascade needs two or more")


def params_of(pair: Pair) -> dict[str, Any]:
    pre, post = pair
    return {
        "pre_call": {"name": pre.name, "params": pre.params()},
        "post_hoc": {"name": post.name, "params": post.params()},
    }
