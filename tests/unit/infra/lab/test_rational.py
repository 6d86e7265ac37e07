"""Rational Tuning's copula model and joint threshold search."""

from __future__ import annotations

import numpy as np
import pytest

from infra.lab.rational import copula_draws, expected_error_and_cost, tune


def test_copula_draws_keep_marginals_and_dependence() -> None:
    rng = np.random.default_rng(0)
    z = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=3000)
    p = 1 / (1 + np.exp(-z))  # two dependent calibrated confidences
    draws = copula_draws(p)
    levels = [0.1, 0.5, 0.9]
    for j in range(2):
        assert np.quantile(draws[:, j], levels) == pytest.approx(np.quantile(p[:, j], levels), abs=0.02)
    drawn, observed = np.asarray(np.corrcoef(draws, rowvar=False)), np.asarray(np.corrcoef(p, rowvar=False))
    assert drawn[0, 1] == pytest.approx(observed[0, 1], abs=0.05)


def test_expected_error_and_cost_by_hand() -> None:
    samples = np.array([[0.9, 0.5], [0.2, 0.7]])
    costs = np.array([1.0, 10.0])
    error, cost = expected_error_and_cost(samples, costs, np.array([0.5, 0.0]))
    assert error == pytest.approx(((1 - 0.9) + (1 - 0.7)) / 2)  # first stops at tier 0, second at tier 1
    assert cost == pytest.approx((1 + 11) / 2)


def test_a_higher_price_of_cost_lowers_cost() -> None:
    rng = np.random.default_rng(1)
    samples = np.column_stack([rng.uniform(0.3, 1.0, 4000), rng.uniform(0.6, 1.0, 4000)])
    costs = np.array([1.0, 20.0])
    grids = [np.unique([*np.quantile(c, np.linspace(0, 1, 25)), 1.0 + 1e-9]) for c in samples.T]
    cheap = tune(samples, costs, 1.0, grids)
    dear = tune(samples, costs, 1e-4, grids)
    assert expected_error_and_cost(samples, costs, cheap)[1] < expected_error_and_cost(samples, costs, dear)[1]
    assert expected_error_and_cost(samples, costs, dear)[0] <= expected_error_and_cost(samples, costs, cheap)[0]
