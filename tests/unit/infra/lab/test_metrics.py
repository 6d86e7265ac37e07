"""The papers' metrics on curves small enough to check by hand."""

from __future__ import annotations

import pytest

from infra.lab.metrics import Point, Reference, aiq, apgr, best_at, cpt, summary, upper_hull

REF = Reference(weak_cost=1.0, weak_accuracy=0.5, strong_cost=10.0, strong_accuracy=0.9)


def test_pgr_and_cpt_read_the_gap_recovered() -> None:
    curve = [Point(1.0, 0.5), Point(3.0, 0.7), Point(5.0, 0.82), Point(10.0, 0.9)]
    assert REF.pgr(0.7) == pytest.approx(0.5)
    assert cpt(curve, REF, 0.5) == pytest.approx(30.0)  # 3.0 of the strong tier's 10.0
    assert cpt(curve, REF, 0.8) == pytest.approx(50.0)
    assert cpt([Point(1.0, 0.5)], REF, 0.5) is None


def test_apgr_of_the_random_mix_is_about_one_half_and_of_a_perfect_router_near_one() -> None:
    mix = [Point(1.0 + 9.0 * s, 0.5 + 0.4 * s) for s in (i / 20 for i in range(21))]
    assert apgr(mix, REF) == pytest.approx(0.45, abs=0.03)  # linear from cost 1, nothing below it
    perfect = [Point(0.0, 0.9)]
    assert apgr(perfect, REF) == pytest.approx(1.0)


def test_upper_hull_is_non_decreasing_and_convex() -> None:
    points = [Point(1, 0.5), Point(2, 0.55), Point(3, 0.8), Point(4, 0.7), Point(6, 0.85)]
    assert upper_hull(points) == [(1, 0.5), (3, 0.8), (6, 0.85)]


def test_aiq_averages_the_hull_over_the_cost_range() -> None:
    flat = [Point(0.0, 0.8), Point(10.0, 0.8)]
    assert aiq(flat, REF) == pytest.approx(0.8)
    late = [Point(5.0, 0.8)]  # nothing below cost 5: half the range scores 0
    assert aiq(late, REF) == pytest.approx(0.8 * 51 / 101)


def test_summary_reports_cost_at_strongest_accuracy_and_budgets() -> None:
    curve = [Point(2.0, 0.6), Point(4.0, 0.91), Point(8.0, 0.95)]
    report = summary(curve, REF, budgets=(3.0, 100.0))
    assert report["cost_at_strongest_accuracy"] == 4.0
    assert report["cost_at_strongest_accuracy_pct"] == pytest.approx(40.0)
    assert report["accuracy_at_budget"] == {"3.0": 0.6, "100.0": 0.95}
    assert best_at(curve, 1.0) is None
