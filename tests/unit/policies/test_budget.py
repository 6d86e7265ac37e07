"""The feedback law's pure pieces: bounded steps, anti-windup, the quality floor's precedence."""

from __future__ import annotations

import math

import pytest

from policies.budget import (
    Goals,
    LawParams,
    Observation,
    bounded_step,
    lambda_bounds,
    latency_weights,
    next_lambda,
    next_mu,
    relative_error,
    steer_thresholds,
)

PARAMS = LawParams(gain=0.25, step=0.04, deadband=0.01)


def obs(
    cost: float = 1.0, latency: float = 100.0, confidence: float = 0.8, n: int = 100, slow: float = 0.0
) -> Observation:
    return Observation(n, cost, cost * 10, latency, confidence, slow)


def test_relative_error_is_clipped_and_ignores_unusable_targets() -> None:
    assert relative_error(3.0, 1.0) == 1.0
    assert relative_error(0.0, 1.0) == -1.0
    assert relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert relative_error(1.0, 0.0) == 0.0
    assert relative_error(math.nan, 1.0) == 0.0


def test_a_step_never_exceeds_the_bound_and_never_leaves_the_range() -> None:
    assert bounded_step(0.0, 1.0, PARAMS, -1, 1) == pytest.approx(0.04)
    assert bounded_step(0.0, -1.0, PARAMS, -1, 1) == pytest.approx(-0.04)
    assert bounded_step(0.99, 1.0, PARAMS, -1, 1) == 1.0  # anti-windup: clamped, no integration beyond
    assert bounded_step(0.3, 0.005, PARAMS, -1, 1) == 0.3  # inside the deadband


def test_lambda_range_stops_where_every_threshold_saturates() -> None:
    base = {"small": 0.8, "medium": 0.6}
    low, high = lambda_bounds(base)
    assert steer_thresholds(base, high, 0.0, {}) == {"small": 0.0, "medium": 0.0}
    assert steer_thresholds(base, low, 0.0, {}) == pytest.approx({"small": 1.0, "medium": 1.0})
    # Just inside the range some threshold still moves: the range is no wider than it must be.
    assert steer_thresholds(base, high - 0.01, 0.0, {})["small"] > 0
    assert steer_thresholds(base, low + 0.01, 0.0, {})["medium"] < 1


def test_over_budget_raises_lambda_and_under_budget_lowers_it() -> None:
    goals = Goals(cost_per_request=1.0)
    assert next_lambda(0.0, obs(cost=1.5), goals, PARAMS, (-1, 1)) > 0
    assert next_lambda(0.0, obs(cost=0.5), goals, PARAMS, (-1, 1)) < 0
    assert next_lambda(0.2, obs(cost=1.5, n=0), goals, PARAMS, (-1, 1)) == 0.2  # no data: hold


def test_the_quality_floor_wins_over_the_cost_target() -> None:
    goals = Goals(cost_per_request=1.0, quality_floor=0.9)
    # Over budget, but quality is below the floor: λ must fall (spend more), not rise.
    assert next_lambda(0.3, obs(cost=2.0, confidence=0.7), goals, PARAMS, (-1, 1)) < 0.3
    # At the floor, over budget: λ may not rise any further.
    assert next_lambda(0.3, obs(cost=2.0, confidence=0.9), goals, PARAMS, (-1, 1)) == 0.3


def test_without_a_cost_target_lambda_returns_to_the_base_thresholds() -> None:
    assert next_lambda(0.1, obs(), Goals(), PARAMS, (-1, 1)) == pytest.approx(0.06)
    assert next_lambda(0.02, obs(), Goals(), PARAMS, (-1, 1)) == 0.0
    assert next_lambda(-0.02, obs(), Goals(), PARAMS, (-1, 1)) == 0.0


def test_mu_steers_the_share_of_slow_requests_inside_the_quantile() -> None:
    goals = Goals(latency_ms=100.0)
    assert next_mu(0.0, obs(slow=0.10), goals, PARAMS, 0.95) == pytest.approx(0.04)  # p95 missed
    assert next_mu(0.2, obs(slow=0.025), goals, PARAMS, 0.95) == 0.2  # at the margin (2.5%): hold
    assert next_mu(0.2, obs(slow=0.0), goals, PARAMS, 0.95) == pytest.approx(0.16)
    assert next_mu(0.0, obs(slow=0.0), goals, PARAMS, 0.95) == 0.0  # never below 0: the guard cannot buy quality
    assert next_mu(0.5, obs(), Goals(), PARAMS) == pytest.approx(0.46)


def test_latency_weights_point_at_the_step_into_the_slow_tier() -> None:
    # End-to-end latency of requests that ended at each tier: escalating into large adds 360 ms.
    weights = latency_weights(("small", "medium", "large"), {"small": 10.0, "medium": 40.0, "large": 400.0})
    assert weights == pytest.approx({"small": 30 / 360, "medium": 1.0})
    thresholds = steer_thresholds({"small": 0.8, "medium": 0.8}, 0.0, 0.5, weights)
    assert thresholds == pytest.approx({"small": 0.8 - 0.5 * 30 / 360, "medium": 0.3})
    assert latency_weights(("a", "b"), {}) == {"a": 1.0}
