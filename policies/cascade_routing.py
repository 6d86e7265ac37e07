"""Cascade routing (Dekoninck et al., ICML'25): routing and cascading as one decision, repeated.

At each step the policy picks the set S of tiers maximising

    Q̂(S) - λ · Σ cost(t), t in S and not yet run,

where Q̂(S) is the expected quality of the best answer in S as the policy will judge
it: a tier that ran has its post-hoc estimate (from the answer's signals and the
ex-ante estimate), known; a tier that has not run has its ex-ante estimate μ_t (from
the query vector), and running it reveals a post-hoc estimate ~ N(μ_t, σ_t²), σ_t
being how far post-hoc estimates of that tier stray from ex-ante ones (fitted on
the train split). So Q̂(S) = E[max over t in S], the value of the information the
calls would buy. It runs the cheapest tier of S that has not run, and stops when S
holds only tiers that ran, delivering the answer with the best estimated quality.
The expectation uses a fixed table of normal draws: the decision is a pure
function of the estimates.

Why not σ = the estimators' error against correctness, as one might read the
paper: for a yes/no outcome that error is mostly the outcome's own noise
(sqrt(p(1 - p)), about 0.4), not uncertainty the next call can remove, and it made
every extra call look worth about 0.2 in quality — the cascade ran every tier.

The router makes the first step (``cascade_router``) and records the ex-ante
estimates in the task; the verifier (``cascade_routing``) makes the others,
replacing each answering tier's estimate by its post-hoc one in the escalated
task, so the two stages share the state through the request history. λ is fitted
to a budget in the lab (``infra/lab/routing.py``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policies.base import PostHocPolicy, PreCallPolicy, Route, TierInfo, Verdict, VerdictAction, allowed_tiers
from policies.features import LEGACY_EMBEDDING, FloatVector, check_embedding, prefix_param
from policies.routers import require_vector, tier_costs
from policies.scoring import LinearHeads, LinearScorer
from topics.errors import ConfigError
from topics.messages import Answer, Request

MAX_TIERS = 8
"""Sets are enumerated (2^n); eight tiers are 256 sets per step."""
_HALF = np.random.default_rng(20250717).standard_normal((256, MAX_TIERS))
_DRAWS = np.vstack([_HALF, -_HALF])
"""Antithetic normal draws: their mean is exactly 0, so a one-tier set's value is exactly its estimate."""


def expected_max(mu: Sequence[float], sigma: Sequence[float]) -> float:
    """E[max_t q_t] for independent q_t ~ N(mu_t, sigma_t²); 0 for the empty set (no answer)."""
    if not mu:
        return 0.0
    samples = np.asarray(mu) + np.asarray(sigma) * _DRAWS[:, : len(mu)]
    return float(samples.max(axis=1).mean())


def best_set(
    ran: Sequence[str],
    unrun: Sequence[str],
    mu: Mapping[str, float],
    sigma: Mapping[str, float],
    costs: Mapping[str, float],
    lam: float,
) -> tuple[str, ...]:
    """The tiers of ``unrun`` to add to ``ran`` that maximise Q̂ - λ·cost (ties: the cheaper set)."""
    best: tuple[float, float, tuple[str, ...]] | None = None
    for size in range(len(unrun) + 1):
        for extra in itertools.combinations(unrun, size):
            members = [*ran, *extra]
            cost = sum(costs[t] for t in extra)
            value = expected_max([mu[t] for t in members], [sigma[t] for t in members]) - lam * cost
            if best is None or value > best[0] + 1e-12 or (abs(value - best[0]) <= 1e-12 and cost < best[1]):
                best = (value, cost, extra)
    assert best is not None
    return best[2]


def _sigmas(data: Mapping[str, float], tiers: Sequence[str]) -> dict[str, float]:
    missing = [t for t in tiers if t not in data]
    if missing:
        raise ConfigError(f"cascade routing lacks the sigma of tier {missing[0]!r}")
    out = {t: float(data[t]) for t in tiers}
    if any(not 0.0 <= s <= 1.0 for s in out.values()):
        raise ConfigError("cascade routing's sigma must be in [0, 1]")
    return out


def _check_size(tiers: Sequence[str]) -> tuple[str, ...]:
    if not 1 <= len(tiers) <= MAX_TIERS:
        raise ConfigError(f"cascade routing handles 1 to {MAX_TIERS} tiers, got {len(tiers)}")
    return tuple(tiers)


@dataclass(frozen=True)
class CascadeRouter(PreCallPolicy):
    """The first step: ex-ante estimates only; start at the cheapest tier of the best set."""

    tiers: tuple[str, ...] = ()
    lam: float = 0.0
    ex_ante: Any = None
    """``LinearHeads``, one logistic head per tier: P(correct | query vector)."""
    sigma: Mapping[str, float] = field(default_factory=dict)
    """Per tier, the spread of its post-hoc estimate around the ex-ante one."""
    costs: Mapping[str, float] = field(default_factory=dict)

    embedding: str = LEGACY_EMBEDDING
    """The query embedding the vectors it reads come from (``policies/features.py``)."""
    query_prefix: str = ""
    """The shared prefix stripped from every query before it is featurised (``policies/features.py``)."""

    name = "cascade_router"
    family = "hybrid"
    needs_features = True

    def __post_init__(self) -> None:
        check_embedding(self.embedding, self.name)
        object.__setattr__(self, "tiers", _check_size(self.tiers))
        object.__setattr__(self, "ex_ante", LinearHeads.from_json(self.ex_ante))
        object.__setattr__(self, "sigma", _sigmas(self.sigma, self.tiers))
        object.__setattr__(self, "costs", tier_costs(self.costs, self.tiers, self.name))

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        mu = {t: float(p) for t, p in zip(self.ex_ante.heads, self.ex_ante.probs(require_vector(features, self.name)),
                                           strict=True)}  # fmt: skip
        ladder = tuple(t for t in allowed_tiers(request, tiers) if t in self.tiers)
        if not ladder:
            return Route(allowed=(), start=None, reason="cascade routing: no fitted tier is allowed")
        chosen = best_set((), ladder, mu, self.sigma, self.costs, self.lam)
        start = min(chosen, key=lambda t: self.costs[t]) if chosen else min(ladder, key=lambda t: self.costs[t])
        return Route(allowed=ladder, start=start, reason=f"best set {'+'.join(chosen)}", estimates=mu)

    def params(self) -> dict[str, Any]:
        return {"tiers": list(self.tiers), "lam": self.lam, "ex_ante": self.ex_ante.to_json(),
                "sigma": dict(self.sigma), "costs": dict(self.costs),
                "embedding": self.embedding, **prefix_param(self.query_prefix)}  # fmt: skip


@dataclass(frozen=True)
class CascadeRouting(PostHocPolicy):
    """The later steps: the answering tier's estimate becomes post-hoc, then the best set decides again."""

    tiers: tuple[str, ...] = ()
    lam: float = 0.0
    post_hoc: Mapping[str, Any] = field(default_factory=dict)
    """Per tier, a ``LinearScorer`` of P(correct) on the answer's signals and ``ex_ante``."""
    sigma: Mapping[str, float] = field(default_factory=dict)
    costs: Mapping[str, float] = field(default_factory=dict)

    name = "cascade_routing"
    family = "hybrid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", _check_size(self.tiers))
        scorers = {t: v if isinstance(v, LinearScorer) else LinearScorer.from_json(v) for t, v in self.post_hoc.items()}
        object.__setattr__(self, "post_hoc", scorers)
        object.__setattr__(self, "sigma", _sigmas(self.sigma, self.tiers))
        object.__setattr__(self, "costs", tier_costs(self.costs, self.tiers, self.name))

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        task = answer.task
        mu = {t: task.estimates.get(t, 0.0) for t in self.tiers}
        scorer = self.post_hoc.get(answer.tier)
        if answer.error is not None or answer.tier not in self.tiers:
            mu[answer.tier] = 0.0
        elif scorer is not None:
            mu[answer.tier] = min(max(scorer.p_correct(answer), 0.0), 1.0)
        ran = [t for t in dict.fromkeys([*(e.tier for e in task.history), answer.tier]) if t in self.tiers]
        allowed = set(task.allowed or self.tiers)
        unrun = [t.name for t in tiers if t.name in self.tiers and t.name in allowed and t.name not in ran]
        sigma = {t: 0.0 if t in ran else self.sigma[t] for t in self.tiers}  # what ran is known
        chosen = best_set(ran, unrun, mu, sigma, self.costs, self.lam)
        if chosen:
            target = min(chosen, key=lambda t: self.costs[t])
            why = f"best set {'+'.join([*ran, *chosen])}: run {target}"
            return Verdict(VerdictAction.ESCALATE, target=target, reason=why, estimates=mu)
        answered = [t for t in ran if t != answer.tier or answer.error is None]
        if not answered:
            return Verdict(VerdictAction.STOP, reason=answer.error or "no tier answered")
        deliver = max(reversed(answered), key=lambda t: mu[t])
        why = f"best set {'+'.join(ran)} ran; {deliver} estimated {mu[deliver]:.3f}"
        return Verdict(VerdictAction.ACCEPT, reason=why, deliver=deliver)

    def params(self) -> dict[str, Any]:
        return {
            "tiers": list(self.tiers),
            "lam": self.lam,
            "post_hoc": {t: s.to_json() for t, s in self.post_hoc.items()},
            "sigma": dict(self.sigma),
            "costs": dict(self.costs),
        }
