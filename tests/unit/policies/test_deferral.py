"""The speculative cascade's deferral rules as pure functions (the decoder is tested in tests/unit/workers/backends)."""

from __future__ import annotations

import numpy as np
import pytest

from policies.deferral import (
    RULES,
    chow_defers,
    common_prefix,
    defers,
    diff_defers,
    opt_defers,
    softmax,
    total_variation,
)


def test_total_variation_of_known_pairs() -> None:
    assert total_variation([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0
    assert total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert total_variation([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]) == 0.5
    assert total_variation([0.75, 0.25], [0.5, 0.5]) == total_variation([0.5, 0.5], [0.75, 0.25]) == 0.25
    with pytest.raises(ValueError, match="different vocabularies"):
        total_variation([0.5, 0.5], [1.0, 0.0, 0.0])


def test_chow_boundary_is_strict() -> None:
    q = np.array([0.75, 0.25])
    assert not chow_defers(q, 0.25)  # 0.75 < 1 - 0.25 is false: at the threshold the drafter keeps
    assert chow_defers(q, 0.125)  # 0.75 < 0.875
    assert not chow_defers(q, 0.5)


def test_chow_alpha_extremes() -> None:
    uniform = np.full(4, 0.25)
    certain = np.array([1.0, 0.0, 0.0, 0.0])
    assert chow_defers(uniform, 0.0) and chow_defers(np.array([0.999, 0.001]), 0.0)
    assert not chow_defers(certain, 0.0)  # only a certain drafter keeps at alpha 0
    assert not chow_defers(uniform, 1.0) and not chow_defers(uniform, 7.5)


def test_diff_boundary_is_strict() -> None:
    q, p = np.array([0.5, 0.5]), np.array([0.75, 0.25])
    assert not diff_defers(q, p, 0.25)  # 0.5 < 0.75 - 0.25 is false
    assert diff_defers(q, p, 0.125)
    assert not diff_defers(p, q, 0.0)  # a drafter more confident than the target never defers


def test_opt_boundary_scales_the_margin_by_total_variation() -> None:
    q, p = np.array([0.5, 0.5]), np.array([0.75, 0.25])  # D_TV = 0.25
    assert opt_defers(q, p, 0.0)  # 0.5 < 0.75
    assert opt_defers(q, p, 0.5)  # 0.5 < 0.75 - 0.125
    assert not opt_defers(q, p, 1.0)  # 0.5 < 0.75 - 0.25 is false: exactly at the boundary
    assert not diff_defers(q, p, 0.5)  # where Diff, with the unscaled margin, keeps
    same = np.array([0.25, 0.25, 0.5])
    assert not opt_defers(same, same, 0.0)  # identical models: nothing to gain by deferring


def test_rules_defer_less_as_alpha_grows_and_never_at_alpha_one() -> None:
    rng = np.random.default_rng(7)
    alphas = (0.0, 0.05, 0.2, 0.5, 0.8, 1.0, 2.0)
    for _ in range(300):
        p, q = rng.dirichlet(np.full(50, 0.3)), rng.dirichlet(np.full(50, 0.3))
        for rule in RULES:
            decisions = [defers(rule, q, p, a) for a in alphas]
            assert decisions == sorted(decisions, reverse=True), (rule, decisions)  # True... then False...
            assert not defers(rule, q, p, 1.0)  # max p - max q <= D_TV <= 1


def test_defers_dispatches_and_rejects_bad_input() -> None:
    q, p = np.array([0.5, 0.5]), np.array([0.75, 0.25])
    assert defers("chow", q, p, 0.125) == chow_defers(q, 0.125)
    assert defers("diff", q, p, 0.125) == diff_defers(q, p, 0.125)
    assert defers("opt", q, p, 0.5) == opt_defers(q, p, 0.5)
    with pytest.raises(ValueError, match="unknown deferral rule"):
        defers("never", q, p, 0.5)  # type: ignore[arg-type]
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            chow_defers(q, bad)


def test_softmax_and_common_prefix() -> None:
    probs = softmax(np.array([1000.0, 1000.0, -np.inf]))
    assert probs.tolist() == [0.5, 0.5, 0.0]
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2
