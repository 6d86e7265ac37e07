"""AutoMix (Aggarwal et al.): escalate when the answering model's self-verification is weak.

Needs the ``verify_p`` feature: record the trace with ``tierflow trace --verify``
(the model reads its own answer back and we take P(Yes)). A tier that cannot
verify itself (a recorded tier) offers its confidence instead.

* ``automix`` (threshold variant): escalate when ``verify_p <= t``; sweep t.
* ``automix_pomdp``: AutoMix's POMDP sees only a bin of ``verify_p`` and must act
  without knowing whether the request is GOOD (this tier is right), NEEDY (a
  higher tier would be right) or HOPELESS (none is). We solve it on the train split
  by dynamic programming from the top tier down: per tier and bin, the action
  (accept, or escalate and continue optimally) with the higher mean of
  correctness - λ·(cost still to pay) over the train items in that bin — the
  empirical state distribution per bin standing in for the belief. Sweep λ.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from infra.lab.fitters import Method, Pair, answers_of, threshold_grid
from infra.lab.table import TraceTable
from policies.cascades import AutoMix, self_verification
from policies.defaults import CheapestFirst
from topics.errors import DataError

BINS = 6


def verify_matrix(train: TraceTable) -> npt.NDArray[np.float64]:
    """Self-verification per item and tier (``self_verification``: ``verify_p``, else the confidence).

    A DataError when no tier that may escalate verified itself: then AutoMix would
    only be a confidence threshold.
    """
    if not any("verify_p" in rows[t].features for rows in train.rows for t in range(len(train.tiers) - 1)):
        raise DataError("no tier has a verify_p feature: AutoMix needs a trace recorded with --verify")
    answers = answers_of(train)
    return np.array([[self_verification(a) for a in per] for per in answers], dtype=float)


class AutoMixThreshold(Method):
    name = "automix"

    def prepare(self, train: TraceTable) -> None:
        self._grid = threshold_grid(verify_matrix(train)[:, :-1].ravel())

    def settings(self) -> list[float]:
        return self._grid

    def policies(self, setting: float) -> Pair:
        return CheapestFirst(), AutoMix(threshold=setting)


class AutoMixPOMDP(Method):
    name = "automix_pomdp"

    def prepare(self, train: TraceTable) -> None:
        verify = verify_matrix(train)
        self._tiers = train.tiers
        self._correct = train.correct.astype(float)
        self._cost = train.cost
        inner = np.linspace(0, 1, BINS + 1)[1:-1]
        self._edges = [np.unique(np.quantile(column, inner)) for column in verify.T]
        self._bins = np.column_stack(
            [np.searchsorted(self._edges[t], verify[:, t], side="right") for t in range(len(train.tiers))]
        )
        scale = float(train.cost.mean(axis=0).max())
        self._lambdas = [0.0, *(float(x) / scale for x in np.geomspace(1e-3, 10.0, 17))]

    def settings(self) -> list[float]:
        return self._lambdas

    def table(self, lam: float) -> dict[str, list[str]]:
        """Per tier below the top, the action for each ``verify_p`` bin."""
        last = len(self._tiers) - 1
        value = self._correct[:, last].copy()
        actions: dict[str, list[str]] = {}
        for t in range(last - 1, -1, -1):
            accept = self._correct[:, t]
            escalate = value - lam * self._cost[:, t + 1]
            chosen = []
            for b in range(len(self._edges[t]) + 1):
                members = self._bins[:, t] == b
                go_on = members.any() and escalate[members].mean() > accept[members].mean()
                chosen.append("escalate" if go_on else "accept")
            actions[self._tiers[t]] = chosen
            pick = np.array([chosen[b] == "escalate" for b in self._bins[:, t]])
            value = np.where(pick, escalate, accept)
        return actions

    def policies(self, setting: float) -> Pair:
        bins = {tier: [float(e) for e in self._edges[t]] for t, tier in enumerate(self._tiers[:-1])}
        return CheapestFirst(), AutoMix(bins=bins, actions=self.table(setting))
