"""Pre-call routers of the survey: they pick the tier that starts, most of them from the query vector.

Every learned router here is N-way: it knows the tiers it was fitted on (``tiers``, the
ladder, cheapest first), routes among those the request's hints and the budget
controller leave, and allows the tiers from its choice upward, so the post-hoc
``accept`` policy escalates only when a tier fails with an error. Their post-hoc
partners (``accept``, ``agreement``) are in ``policies/partners.py``.

* ``chain`` — FrugalGPT's router (not learned, reads no query vector): allow only the
  tiers of its chain and start at the first; ``frugalgpt`` (``policies/cascades.py``)
  walks the chain.
* ``routellm`` — RouteLLM: P(strong beats tier t | q) from a matrix-factorisation
  scorer (Bradley-Terry on tier scores) or a classifier; start at the cheapest tier
  whose win rate for the strong tier is below α. α is the quantile that sends a
  chosen share of traffic to the strong tier (fitted on the train split).
* ``hybrid_llm`` — Hybrid LLM: P(quality(t) >= quality(strong) - r | q) per tier,
  the relaxation r balancing its labels; start at the cheapest tier with P >= τ.
* ``optllm`` — OptLLM: bootstrapped per-tier success predictors; route to the tier
  maximising P(success) - λ·cost. Sweeping λ traces the Pareto front of (cost,
  expected accuracy) that the operator picks a point from by budget.
* ``cargo`` — CARGO: one regressor scores every tier; take the argmax of
  score - λ·cost when it leads the runner-up by τ or more, else a pairwise
  classifier of the top two decides.
* ``select_then_route`` — Select-Then-Route: a taxonomy classifier (nearest
  category centroid) maps the query to the tiers proven on its category; the
  cheapest runs first and ``agreement`` escalates within that shortlist when a
  k-of-n agreement check fails.

The fitted models are plain numbers (``policies/scoring.py``); fitting lives in
``infra/lab/routing.py``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from policies.base import PreCallPolicy, Route, TierInfo, allowed_tiers
from policies.features import LEGACY_EMBEDDING, FloatVector, check_embedding, prefix_param
from policies.scoring import LinearHeads, MatrixFactorisation, Standardiser, checked_array
from topics.errors import ConfigError
from topics.messages import Request


def _known(request: Request, tiers: tuple[TierInfo, ...], fitted: Sequence[str]) -> tuple[str, ...]:
    """The tiers the request may use that the policy was fitted on, in ladder order."""
    return tuple(t for t in allowed_tiers(request, tiers) if t in fitted)


def _from(ladder: tuple[str, ...], start: str, reason: str) -> Route:
    """Start at ``start``; the tiers above it stay allowed so a failing call can still escalate."""
    return Route(allowed=ladder[ladder.index(start) :], start=start, reason=reason)


def require_vector(features: FloatVector | None, policy: str) -> FloatVector:
    """The query vector; a router that reads one and is given none is a wiring error, said in one line."""
    if features is None:
        raise ConfigError(f"policy {policy!r} reads the query vector, which the caller did not compute")
    return features


def _first_below_strong(ladder: tuple[str, ...], strong: str, good_enough: Callable[[str], bool], name: str) -> Route:
    """The cheapest tier below ``strong`` that ``good_enough`` accepts, else ``strong`` (or the best left)."""
    if not ladder:
        return Route(allowed=(), start=None, reason=f"{name}: no fitted tier is allowed")
    below = ladder[: ladder.index(strong)] if strong in ladder else ladder[:-1]
    chosen = next((t for t in below if good_enough(t)), strong if strong in ladder else ladder[-1])
    return _from(ladder, chosen, f"{name}: {chosen}")


@dataclass(frozen=True)
class ChainRouter(PreCallPolicy):
    """Allow only the tiers of ``chain`` (in ladder order) and start at the first one allowed."""

    chain: tuple[str, ...] = ()

    name = "chain"

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", tuple(self.chain))

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        allowed = tuple(t for t in allowed_tiers(request, tiers) if not self.chain or t in self.chain)
        if not allowed:
            return Route(allowed=(), start=None, reason="no tier of the chain is allowed")
        return Route(allowed=allowed, start=allowed[0])

    def params(self) -> dict[str, Any]:
        return {"chain": list(self.chain)}


@dataclass(frozen=True)
class RouteLLM(PreCallPolicy):
    """Start at the cheapest tier t whose P(``strong`` beats t | q) is below ``alpha``."""

    tiers: tuple[str, ...] = ()
    strong: str = ""
    alpha: float = 0.5
    mf: Any = None
    """A ``MatrixFactorisation`` (the MF router) ..."""
    classifier: Any = None
    """... or ``LinearHeads`` with one head per tier: P(strong beats it) (the classifier router)."""
    target_share: float = 0.0
    """The share of traffic α was calibrated to send to the strong tier."""
    live_window: int = 0
    """> 0: re-calibrate α on the last this-many routed requests, holding ``target_share`` live."""

    embedding: str = LEGACY_EMBEDDING
    """The query embedding the vectors it reads come from (``policies/features.py``)."""
    query_prefix: str = ""
    """The shared prefix stripped from every query before it is featurised (``policies/features.py``)."""

    name = "routellm"
    needs_features = True

    def __post_init__(self) -> None:
        check_embedding(self.embedding, self.name)
        object.__setattr__(self, "tiers", tuple(self.tiers))
        if (self.mf is None) == (self.classifier is None):
            raise ConfigError("routellm needs exactly one of 'mf' and 'classifier'")
        if self.mf is not None:
            object.__setattr__(self, "mf", MatrixFactorisation.from_json(self.mf))
        else:
            object.__setattr__(self, "classifier", LinearHeads.from_json(self.classifier))
        if self.strong not in self.tiers:
            raise ConfigError(f"routellm's strong tier {self.strong!r} is not among its tiers")
        if not 0.0 <= self.target_share <= 1.0 or self.live_window < 0:
            raise ConfigError("routellm needs 0 <= target_share <= 1 and live_window >= 0")

    def win_rates(self, x: FloatVector) -> dict[str, float]:
        """P(strong beats t | q) for each tier t below the strong one (tiers above it are never routed to)."""
        if self.mf is not None:
            scores = dict(zip(self.mf.tiers, self.mf.scores(x), strict=True))
            top = scores[self.strong]
            below = self.tiers[: self.tiers.index(self.strong)]
            return {t: float(1.0 / (1.0 + np.exp(-(top - scores[t])))) for t in below if t in scores}
        return dict(zip(self.classifier.heads, map(float, self.classifier.probs(x)), strict=True))

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        wins = self.win_rates(require_vector(features, self.name))
        ladder = _known(request, tiers, self.tiers)
        return _first_below_strong(ladder, self.strong, lambda t: wins.get(t, 1.0) < self.alpha, self.name)

    def share_score(self, features: FloatVector) -> float:
        """The lowest win rate over the cheaper tiers: the request goes strong when it is >= α."""
        return min(self.win_rates(features).values(), default=1.0)

    def with_share_threshold(self, threshold: float) -> PreCallPolicy:
        return dataclasses.replace(self, alpha=threshold)

    def params(self) -> dict[str, Any]:
        model = {"mf": self.mf.to_json()} if self.mf is not None else {"classifier": self.classifier.to_json()}
        return {"tiers": list(self.tiers), "strong": self.strong, "alpha": self.alpha,
                "target_share": self.target_share, "live_window": self.live_window, **model,
                "embedding": self.embedding, **prefix_param(self.query_prefix)}  # fmt: skip


def share_threshold(scores: npt.ArrayLike, share: float) -> float:
    """The threshold at which the scores >= it make up ``share`` of ``scores`` (RouteLLM's α calibration)."""
    values = np.asarray(scores, dtype=np.float64)
    if share <= 0.0:
        return float(values.max()) + 1e-9
    return float(np.quantile(values, 1.0 - share, method="higher")) if share < 1.0 else float(values.min())


@dataclass(frozen=True)
class HybridLLM(PreCallPolicy):
    """Start at the cheapest tier t with P(quality(t) >= quality(strong) - r | q) >= ``tau``."""

    tiers: tuple[str, ...] = ()
    strong: str = ""
    tau: float = 0.5
    classifier: Any = None
    """``LinearHeads``: one head per tier below ``strong``."""
    relaxation: Mapping[str, float] = field(default_factory=dict)
    """The label relaxation r each head was trained with (for the record)."""

    embedding: str = LEGACY_EMBEDDING
    """The query embedding the vectors it reads come from (``policies/features.py``)."""
    query_prefix: str = ""
    """The shared prefix stripped from every query before it is featurised (``policies/features.py``)."""

    name = "hybrid_llm"
    needs_features = True

    def __post_init__(self) -> None:
        check_embedding(self.embedding, self.name)
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "classifier", LinearHeads.from_json(self.classifier))
        if self.strong not in self.tiers:
            raise ConfigError(f"hybrid_llm's strong tier {self.strong!r} is not among its tiers")

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        p = dict(zip(self.classifier.heads, self.classifier.probs(require_vector(features, self.name)), strict=True))
        ladder = _known(request, tiers, self.tiers)
        return _first_below_strong(ladder, self.strong, lambda t: p.get(t, 0.0) >= self.tau, self.name)

    def params(self) -> dict[str, Any]:
        return {
            "tiers": list(self.tiers),
            "strong": self.strong,
            "tau": self.tau,
            "classifier": self.classifier.to_json(),
            "relaxation": dict(self.relaxation),
            "embedding": self.embedding, **prefix_param(self.query_prefix),
        }


def tier_costs(costs: Mapping[str, float], tiers: Sequence[str], name: str) -> dict[str, float]:
    """The fitted cost of every tier (the policy's own, not the deployment's: λ was priced in it)."""
    missing = [t for t in tiers if t not in costs]
    if missing:
        raise ConfigError(f"{name} lacks the cost of tier {missing[0]!r}")
    return {t: float(costs[t]) for t in tiers}


@dataclass(frozen=True)
class OptLLM(PreCallPolicy):
    """Route to the tier maximising P(success | q) - ``lam`` · cost (bootstrap-averaged predictors)."""

    tiers: tuple[str, ...] = ()
    lam: float = 0.0
    predictor: Any = None
    """``LinearHeads``, one head per tier: the mean logit of the bootstrap ensemble."""
    costs: Mapping[str, float] = field(default_factory=dict)
    """Mean cost per call of each tier on the train split (the unit ``lam`` is priced in)."""

    embedding: str = LEGACY_EMBEDDING
    """The query embedding the vectors it reads come from (``policies/features.py``)."""
    query_prefix: str = ""
    """The shared prefix stripped from every query before it is featurised (``policies/features.py``)."""

    name = "optllm"
    needs_features = True

    def __post_init__(self) -> None:
        check_embedding(self.embedding, self.name)
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "predictor", LinearHeads.from_json(self.predictor))
        object.__setattr__(self, "costs", tier_costs(self.costs, self.tiers, self.name))

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        p = dict(zip(self.predictor.heads, self.predictor.probs(require_vector(features, self.name)), strict=True))
        ladder = _known(request, tiers, self.tiers)
        if not ladder:
            return Route(allowed=(), start=None, reason="optllm: no fitted tier is allowed")
        best = max(ladder, key=lambda t: (p[t] - self.lam * self.costs[t], -self.costs[t]))
        return _from(ladder, best, f"optllm: P(success) {p[best]:.3f}")

    def params(self) -> dict[str, Any]:
        return {"tiers": list(self.tiers), "lam": self.lam, "predictor": self.predictor.to_json(),
                "costs": dict(self.costs), "embedding": self.embedding, **prefix_param(self.query_prefix)}  # fmt: skip


@dataclass(frozen=True)
class Cargo(PreCallPolicy):
    """Argmax of score - ``lam``·cost if it leads by ``tau``; else the pairwise classifier of the top two."""

    tiers: tuple[str, ...] = ()
    lam: float = 0.0
    tau: float = 0.1
    regressor: Any = None
    """``LinearHeads`` (regression): one predicted score per tier."""
    pairwise: Any = None
    """``LinearHeads`` (logistic), heads ``"a|b"`` (a below b on the ladder): P(b beats a | q)."""
    costs: Mapping[str, float] = field(default_factory=dict)

    embedding: str = LEGACY_EMBEDDING
    """The query embedding the vectors it reads come from (``policies/features.py``)."""
    query_prefix: str = ""
    """The shared prefix stripped from every query before it is featurised (``policies/features.py``)."""

    name = "cargo"
    needs_features = True

    def __post_init__(self) -> None:
        check_embedding(self.embedding, self.name)
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "regressor", LinearHeads.from_json(self.regressor))
        object.__setattr__(self, "pairwise", LinearHeads.from_json(self.pairwise))
        object.__setattr__(self, "costs", tier_costs(self.costs, self.tiers, self.name))

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        x = require_vector(features, self.name)
        ladder = _known(request, tiers, self.tiers)
        if not ladder:
            return Route(allowed=(), start=None, reason="cargo: no fitted tier is allowed")
        raw = dict(zip(self.regressor.heads, self.regressor.values(x), strict=True))
        ranked = sorted(ladder, key=lambda t: (raw[t] - self.lam * self.costs[t], -self.costs[t]), reverse=True)
        if len(ranked) == 1:
            return _from(ladder, ranked[0], "cargo: one tier left")
        first, second = ranked[0], ranked[1]
        gap = (raw[first] - self.lam * self.costs[first]) - (raw[second] - self.lam * self.costs[second])
        if gap >= self.tau:
            return _from(ladder, first, f"cargo: gap {gap:.3f}")
        low, high = sorted((first, second), key=ladder.index)
        p_high = float(dict(zip(self.pairwise.heads, self.pairwise.probs(x), strict=True))[f"{low}|{high}"])
        chosen = high if p_high >= 0.5 else low
        return _from(ladder, chosen, f"cargo: tie {gap:.3f}, P({high} beats {low}) {p_high:.3f}")

    def params(self) -> dict[str, Any]:
        return {"tiers": list(self.tiers), "lam": self.lam, "tau": self.tau, "regressor": self.regressor.to_json(),
                "pairwise": self.pairwise.to_json(), "costs": dict(self.costs),
                "embedding": self.embedding, **prefix_param(self.query_prefix)}  # fmt: skip


@dataclass(frozen=True)
class SelectThenRoute(PreCallPolicy):
    """Shortlist the tiers proven on the query's category; start at the cheapest of them."""

    tiers: tuple[str, ...] = ()
    centroids: Any = ()
    """(categories, d) centroids over the standardised query vector: the taxonomy classifier."""
    standardiser: Any = None
    shortlists: Sequence[Sequence[str]] = ()
    """Per category, the tiers within the tolerance of that category's best train accuracy."""

    embedding: str = LEGACY_EMBEDDING
    """The query embedding the vectors it reads come from (``policies/features.py``)."""
    query_prefix: str = ""
    """The shared prefix stripped from every query before it is featurised (``policies/features.py``)."""

    name = "select_then_route"
    needs_features = True

    def __post_init__(self) -> None:
        check_embedding(self.embedding, self.name)
        object.__setattr__(self, "tiers", tuple(self.tiers))
        standardiser = (
            self.standardiser if isinstance(self.standardiser, Standardiser)
            else Standardiser.from_json(self.standardiser or {})
        )  # fmt: skip
        object.__setattr__(self, "standardiser", standardiser)
        k = len(self.shortlists)
        object.__setattr__(self, "centroids", checked_array(self.centroids, k, standardiser.mean.size, "centroids"))
        object.__setattr__(self, "shortlists", tuple(tuple(s) for s in self.shortlists))
        if k == 0 or any(not s or set(s) - set(self.tiers) for s in self.shortlists):
            raise ConfigError("select_then_route needs a non-empty shortlist of known tiers per category")

    def category(self, x: FloatVector) -> int:
        z = self.standardiser(x)
        return int(np.argmin(((self.centroids - z) ** 2).sum(axis=1)))

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        c = self.category(require_vector(features, self.name))
        ladder = _known(request, tiers, self.tiers)
        shortlist = tuple(t for t in ladder if t in self.shortlists[c]) or ladder
        if not shortlist:
            return Route(allowed=(), start=None, reason="select_then_route: no fitted tier is allowed")
        return Route(allowed=shortlist, start=shortlist[0], reason=f"select_then_route: category {c}")

    def params(self) -> dict[str, Any]:
        return {
            "tiers": list(self.tiers),
            "centroids": self.centroids.tolist(),
            "standardiser": self.standardiser.to_json(),
            "shortlists": [list(s) for s in self.shortlists],
            "embedding": self.embedding, **prefix_param(self.query_prefix),
        }
