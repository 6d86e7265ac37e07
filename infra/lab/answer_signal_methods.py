"""Lab methods for the answer-side signal policies (``policies/answer_signals.py``).

* ``semantic_entropy``: one τ (nats) for every tier, swept over the quantiles of
  the train split's semantic entropies (``semantic_entropy``, or choice mode's
  option ``entropy``) plus one below zero (offload everything).
* ``self_ref``: one τ for every tier, swept over the quantiles of the train split's
  ``self_ref`` values (never rejecting: ``reject_below`` is a deployment choice
  about the requests nobody should answer, not a point on the cost curve).

Like ``threshold``, neither fits anything: the signal is used raw. A trace whose
tiers below the top lack the signal raises a DataError naming the feature, so
``tierflow eval --policy all`` skips the method there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from infra.lab.fitters import Method, Pair, answers_of, threshold_grid
from infra.lab.table import TraceTable
from policies.answer_signals import SelfRef, SemanticEntropy, self_ref_of, semantic_entropy_of
from policies.defaults import CheapestFirst
from topics.errors import DataError
from topics.messages import Answer


def signal_values(train: TraceTable, read: Callable[[Answer], float]) -> npt.NDArray[np.float64]:
    """The signal of every answer below the top tier (those a policy may escalate), NaNs dropped."""
    values = np.array([read(per[t]) for per in answers_of(train) for t in range(len(train.tiers) - 1)], dtype=float)
    return values[np.isfinite(values)]


def require_feature(table: TraceTable, features: tuple[str, ...], hint: str) -> None:
    """A DataError unless some tier below the top reports one of ``features``."""
    below_top = range(len(table.tiers) - 1)
    if not any(name in rows[t].features for rows in table.rows for t in below_top for name in features):
        raise DataError(f"no tier below the top has a {features[0]} feature: {hint}")


class SemanticEntropyMethod(Method):
    """Offload when the answer's semantic entropy exceeds τ; one τ for every tier."""

    name = "semantic_entropy"

    def check(self, table: TraceTable) -> None:
        require_feature(
            table,
            ("semantic_entropy", "entropy"),
            "record the trace in generate mode with samples > 1 (or in choice mode, for the option entropy)",
        )

    def prepare(self, train: TraceTable) -> None:
        self.check(train)
        values = signal_values(train, semantic_entropy_of)
        # threshold_grid's quantiles, plus -ε: entropy is >= 0, so "accept when <= -ε" offloads everything
        self._grid = sorted({-1e-9, *threshold_grid(values)})

    def settings(self) -> list[float]:
        return self._grid

    def policies(self, setting: float) -> Pair:
        return CheapestFirst(), SemanticEntropy(tau=setting)


class SelfRefMethod(Method):
    """Accept when the answer's ``self_ref`` reaches τ; one τ for every tier."""

    name = "self_ref"

    def check(self, table: TraceTable) -> None:
        require_feature(table, ("self_ref",), "record the trace with the LLM tiers' self_ref option on")

    def prepare(self, train: TraceTable) -> None:
        self.check(train)
        self._grid = threshold_grid(signal_values(train, self_ref_of))

    def settings(self) -> list[float]:
        return self._grid

    def policies(self, setting: float) -> Pair:
        return CheapestFirst(), SelfRef(tau=setting)
