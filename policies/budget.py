"""The budget controller's feedback law, as pure functions (the controller actor only does I/O).

Knobs: two Lagrange multipliers. ``λ`` prices cost, ``μ`` prices tail latency.
Each tier's acceptance threshold is the operator's (or fitted) base threshold minus
``λ`` and minus ``μ`` times the next tier's share of the latency::

    θ_t = clip(θ⁰_t - λ - μ · v_t, 0, 1),   v_t = latency added by escalating from t / largest such

so a larger λ accepts more answers early (cheaper), a smaller or negative λ
escalates more (dearer, better). λ lowers every threshold by the same amount: on
calibrated confidences that is the same price per unit of expected accuracy at
every tier. μ ≥ 0 only ever lowers escalation, most in front of the slow tiers:
the latency guard cannot buy quality.

Law (dual ascent): every period ``λ += clip(gain · e, ±step)`` where ``e`` is the
relative cost error ``(observed - target) / target`` clipped to ``[-1, 1]``; λ stays
in the range where it still moves some threshold (anti-windup: it never integrates
past the point where every threshold is 0 or 1). A quality floor takes precedence
over the cost target: while the delivered mean confidence is below the floor λ
only falls. Nothing moves without observations (an idle stream holds).

μ does not follow the latency quantile itself: when the target lies between two
tiers' latencies, the quantile jumps between them as the share of requests that
reach the slow tier crosses ``1 - q``, and a law on it chatters. "p95 <= X" is the
same as "at most 5% of requests take longer than X", and that share moves smoothly
with the thresholds; μ steers it to ``(1 - q) · (1 - LATENCY_MARGIN)``, in ``[0, μ_max]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LawParams:
    gain: float = 0.25
    """Multiplier change per unit of relative error per period."""
    step: float = 0.04
    """Largest change of a multiplier in one period."""
    deadband: float = 0.01
    """Relative errors smaller than this do not move the multipliers (no chatter at the target)."""
    mu_max: float = 1.0


def relative_error(observed: float, target: float) -> float:
    """``(observed - target) / target`` clipped to ``[-1, 1]``; 0 for a missing or unusable target."""
    if not (target > 0 and math.isfinite(target) and math.isfinite(observed)):
        return 0.0
    return max(-1.0, min(1.0, (observed - target) / target))


def bounded_step(value: float, error: float, params: LawParams, low: float, high: float) -> float:
    """One dual-ascent step on a multiplier, bounded per period and clamped to ``[low, high]``."""
    if abs(error) < params.deadband:
        return min(high, max(low, value))
    delta = max(-params.step, min(params.step, params.gain * error))
    return min(high, max(low, value + delta))


def lambda_bounds(base: Mapping[str, float]) -> tuple[float, float]:
    """λ's useful range: beyond it every steerable threshold is already 1 (low end) or 0 (high end)."""
    if not base:
        return 0.0, 0.0
    return -(1.0 - min(base.values())), max(base.values())


@dataclass(frozen=True, slots=True)
class Observation:
    """What the controller measured over its window (only the fields the law needs)."""

    requests: int
    cost_per_request: float
    cost_per_second: float
    latency_ms: float
    mean_confidence: float
    over_latency_share: float = 0.0
    """Share of the window's requests slower than the latency target."""


@dataclass(frozen=True, slots=True)
class Goals:
    cost_per_request: float | None = None
    cost_per_second: float | None = None
    latency_ms: float | None = None
    quality_floor: float | None = None


def cost_error(obs: Observation, goals: Goals) -> float:
    """The larger relative overshoot of the cost targets that are set (0 when none is)."""
    errors = []
    if goals.cost_per_request is not None:
        errors.append(relative_error(obs.cost_per_request, goals.cost_per_request))
    if goals.cost_per_second is not None:
        errors.append(relative_error(obs.cost_per_second, goals.cost_per_second))
    return max(errors) if errors else 0.0


def next_lambda(lam: float, obs: Observation, goals: Goals, params: LawParams, bounds: tuple[float, float]) -> float:
    """λ after one period (see the module docstring); the quality floor wins over the cost target."""
    low, high = bounds
    if obs.requests == 0:
        return lam
    floor = goals.quality_floor
    if floor:
        shortfall = (floor - obs.mean_confidence) / floor
        if shortfall > params.deadband:
            return bounded_step(lam, -shortfall, params, low, max(lam, low))
        if shortfall > -params.deadband:
            high = min(high, lam)  # at the floor: cost may not buy any more of it
    if goals.cost_per_request is None and goals.cost_per_second is None:
        # No cost target: drift back to the base thresholds.
        if lam > 0:
            return bounded_step(lam, -1.0, params, 0.0, lam)
        return bounded_step(lam, 1.0, params, lam, 0.0) if lam < 0 else 0.0
    return bounded_step(lam, cost_error(obs, goals), params, low, max(high, low))


LATENCY_MARGIN = 0.5
"""Aim at half the allowed share of slow requests: the share is measured on a few hundred results
and reacts to μ only after the slow tier's own latency, so it swings; half keeps the swings inside."""


def next_mu(mu: float, obs: Observation, goals: Goals, params: LawParams, quantile: float = 0.95) -> float:
    """μ after one period: up while more than ``1 - q`` (less the margin) of requests are slower than
    the target, back down towards 0 while fewer are, or when there is no latency target."""
    if obs.requests == 0:
        return mu
    if goals.latency_ms is None:
        return bounded_step(mu, -1.0, params, 0.0, params.mu_max)
    allowed = (1.0 - quantile) * (1.0 - LATENCY_MARGIN)
    error = max(-1.0, min(1.0, (obs.over_latency_share - allowed) / allowed))
    return bounded_step(mu, error, params, 0.0, params.mu_max)


def latency_weights(tiers: Sequence[str], ended_latency_ms: Mapping[str, float]) -> dict[str, float]:
    """``v_t``: what escalating from tier t adds to a request's latency, over the largest such step.

    Measured from results: the mean end-to-end latency of requests that ended one tier up,
    less that of requests that ended at t. 1 where nothing is known yet.
    """
    steps = {
        lower: max(0.0, ended_latency_ms[upper] - ended_latency_ms.get(lower, 0.0))
        for lower, upper in itertools.pairwise(tiers)
        if upper in ended_latency_ms
    }
    largest = max(steps.values(), default=0.0)
    return {tier: steps[tier] / largest if tier in steps and largest > 0 else 1.0 for tier in tiers[:-1]}


def steer_thresholds(
    base: Mapping[str, float], lam: float, mu: float, latency_weight: Mapping[str, float]
) -> dict[str, float]:
    """``θ_t = clip(θ⁰_t - λ - μ·v_t, 0, 1)`` for every steerable tier."""
    return {tier: min(1.0, max(0.0, theta - lam - mu * latency_weight.get(tier, 1.0))) for tier, theta in base.items()}
