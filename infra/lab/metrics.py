"""The metrics the routing and cascading papers report, over accuracy-cost points.

Notation: on the evaluation split, ``weak`` is the cheapest single tier and
``strong`` the most accurate one (the cheaper of equals). A policy's curve is the
set of (mean cost per request, accuracy) points its sweep produced; at a budget
``c`` it achieves ``best(c)``, the highest accuracy among its points costing at
most ``c``.

* PGR(acc) = (acc - acc_weak) / (acc_strong - acc_weak): the share of the weak-to-strong
  gap recovered.
* CPT(x) (RouteLLM): the least cost, as a % of the strong tier's cost, at which the
  curve recovers x of the gap; None when it never does.
* APGR (RouteLLM): the mean PGR of ``best(c)`` over costs from 0 to the strong tier's
  cost (101 steps), counting a cost below the curve's cheapest point as PGR 0.
* AIQ (RouterBench): the mean over the same cost range of the curve's
  non-decreasing upper convex hull, linearly interpolated between its vertices and
  0 below the cheapest one; comparable across policies on one trace.
* cost at the strongest accuracy: the least cost reaching ``acc_strong`` (absolute
  and as a % of the strong tier's cost).
* accuracy at a budget: ``best(budget)``.
* the buyer's figures: ``cost_to_match_strongest``, the least cost reaching ``acc_strong`` as a
  share of the strong tier's cost, and ``accuracy_at_cost``, ``best(s · strong cost)`` for the
  shares ``s`` of :data:`COST_SHARES`; beside them the best single tier affordable at each share
  (:func:`best_single_at_cost`), so a router is always compared with "just use the best model I
  can afford".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GRID = np.linspace(0.0, 1.0, 101)
COST_SHARES = (0.1, 0.2, 0.5)
"""Shares of the strongest tier's cost at which the report gives every curve's accuracy."""


@dataclass(frozen=True, slots=True)
class Point:
    cost: float
    accuracy: float
    calls: float = 1.0
    setting: float | None = None
    """The swept value (threshold, λ or budget) that gave this point."""


@dataclass(frozen=True, slots=True)
class Reference:
    weak_cost: float
    weak_accuracy: float
    strong_cost: float
    strong_accuracy: float

    @classmethod
    def of(cls, singles: Sequence[Point]) -> Reference:
        weak = min(singles, key=lambda p: (p.cost, -p.accuracy))
        strong = max(singles, key=lambda p: (p.accuracy, -p.cost))
        return cls(weak.cost, weak.accuracy, strong.cost, strong.accuracy)

    def pgr(self, accuracy: float) -> float | None:
        gap = self.strong_accuracy - self.weak_accuracy
        return (accuracy - self.weak_accuracy) / gap if gap > 0 else None


def best_at(points: Sequence[Point], budget: float) -> float | None:
    affordable = [p.accuracy for p in points if p.cost <= budget + 1e-15]
    return max(affordable) if affordable else None


def cpt(points: Sequence[Point], ref: Reference, share: float) -> float | None:
    recovered = [(p.cost, ref.pgr(p.accuracy)) for p in points]
    reaching = [cost for cost, pgr in recovered if pgr is not None and pgr >= share - 1e-12]
    return 100.0 * min(reaching) / ref.strong_cost if reaching and ref.strong_cost > 0 else None


def apgr(points: Sequence[Point], ref: Reference) -> float | None:
    if ref.pgr(ref.strong_accuracy) is None:
        return None
    values = []
    for c in GRID * ref.strong_cost:
        acc = best_at(points, c)
        pgr = None if acc is None else ref.pgr(acc)
        values.append(0.0 if pgr is None else pgr)
    return float(np.mean(values))


def upper_hull(points: Sequence[Point]) -> list[tuple[float, float]]:
    """Vertices of the non-decreasing upper convex hull of (cost, accuracy) points."""
    ordered = sorted({(p.cost, p.accuracy) for p in points})
    frontier: list[tuple[float, float]] = []
    for c, a in ordered:  # non-decreasing: keep only points that improve on everything cheaper
        if not frontier or a > frontier[-1][1]:
            frontier.append((c, a))
    hull: list[tuple[float, float]] = []
    for c, a in frontier:  # upper convex: drop vertices under the chord of their neighbours
        while len(hull) >= 2:
            (c1, a1), (c2, a2) = hull[-2], hull[-1]
            if (a2 - a1) * (c - c1) <= (a - a1) * (c2 - c1):
                hull.pop()
            else:
                break
        hull.append((c, a))
    return hull


def aiq(points: Sequence[Point], ref: Reference) -> float | None:
    if ref.strong_cost <= 0:
        return None
    hull = upper_hull(points)
    xs = np.array([c for c, _ in hull])
    ys = np.array([a for _, a in hull])
    grid = GRID * ref.strong_cost
    values = np.where(grid < xs[0], 0.0, np.interp(grid, xs, ys))
    return float(values.mean())


def cost_at_accuracy(points: Sequence[Point], accuracy: float) -> float | None:
    reaching = [p.cost for p in points if p.accuracy >= accuracy - 1e-12]
    return min(reaching) if reaching else None


def accuracy_at_cost(points: Sequence[Point], ref: Reference) -> dict[str, float | None]:
    """``best`` at each share of the strong tier's cost, keyed ``"0.1"``, ``"0.2"``, ``"0.5"``."""
    return {str(share): best_at(points, share * ref.strong_cost) for share in COST_SHARES}


def best_single_at_cost(
    singles: Sequence[tuple[str, Point]], ref: Reference
) -> dict[str, dict[str, float | str] | None]:
    """The most accurate single tier costing at most each share of the strong tier's cost (None: none does)."""
    out: dict[str, dict[str, float | str] | None] = {}
    for share in COST_SHARES:
        affordable = [(p.accuracy, -p.cost, name) for name, p in singles if p.cost <= share * ref.strong_cost + 1e-15]
        if not affordable:
            out[str(share)] = None
            continue
        accuracy, minus_cost, name = max(affordable)
        out[str(share)] = {"tier": name, "accuracy": accuracy, "cost": -minus_cost}
    return out


def summary(points: Sequence[Point], ref: Reference, budgets: Sequence[float] = ()) -> dict[str, object]:
    """Every metric of one curve, as the JSON report holds it."""
    at_strong = cost_at_accuracy(points, ref.strong_accuracy)
    share = None if at_strong is None or ref.strong_cost <= 0 else at_strong / ref.strong_cost
    return {
        "apgr": apgr(points, ref),
        "cpt50": cpt(points, ref, 0.5),
        "cpt80": cpt(points, ref, 0.8),
        "aiq": aiq(points, ref),
        "cost_at_strongest_accuracy": at_strong,
        "cost_at_strongest_accuracy_pct": None if at_strong is None else 100.0 * at_strong / ref.strong_cost,
        "accuracy_at_budget": {str(b): best_at(points, b) for b in budgets},
        "cost_to_match_strongest": share,
        "accuracy_at_cost": accuracy_at_cost(points, ref),
        "best_accuracy": max(p.accuracy for p in points),
        "points": [{"cost": p.cost, "accuracy": p.accuracy, "calls": p.calls, "setting": p.setting} for p in points],
    }
