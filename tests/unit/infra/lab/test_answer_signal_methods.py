"""The answer-signal methods' sweeps, on trace rows built with a signal that tells right from wrong."""

from __future__ import annotations

import numpy as np
import pytest

from infra.lab.registry import make_method
from infra.lab.simulate import simulate, summarise
from infra.lab.table import TraceTable
from topics.errors import DataError
from topics.traces import TraceRow


def rows(with_signals: bool = True) -> list[TraceRow]:
    """Two tiers; the cheap one is right 60% of the time and its signals say when (with noise)."""
    rng = np.random.default_rng(4)
    out = []
    for i in range(300):
        right = bool(rng.random() < 0.6)
        noise = float(rng.normal(0, 0.15))
        signals = {"self_ref": float(np.clip((0.75 if right else 0.35) + noise, 0, 1)),
                   "semantic_entropy": float(max(0.0, (0.2 if right else 1.0) + noise))}  # fmt: skip
        item, text = f"q{i}", f"question {i}"
        out.append(
            TraceRow(
                item,
                "synthetic",
                text,
                "a",
                tier="cheap",
                model="m1",
                output="a" if right else "b",
                correct=right,
                confidence=0.7,
                features=signals if with_signals else {},
                cost=1.0,
            )
        )
        out.append(TraceRow(item, "synthetic", text, "a", tier="dear", model="m2", output="a", correct=True,
                            confidence=0.9, cost=10.0))  # fmt: skip
    return out


@pytest.mark.parametrize("name", ["self_ref", "semantic_entropy"])
def test_the_sweep_runs_from_the_cheap_tier_to_the_dear_one_and_beats_the_random_mix(name: str) -> None:
    train, test = TraceTable.from_rows(rows()).split(0.5)
    method = make_method(name)
    method.prepare(train)
    points = [summarise(simulate(test, *method.policies(s))) for s in method.settings()]
    cheapest, dearest = min(points, key=lambda p: p.cost), max(points, key=lambda p: p.cost)
    assert cheapest.cost == pytest.approx(1.0) and dearest.accuracy == 1.0
    # An informative signal escalates the wrong answers first: where about 40% escalate,
    # accuracy is far above the random mix's at that cost.
    middle = min(points, key=lambda p: abs(p.cost - 5.0))
    weak = float(test.correct[:, 0].mean())
    share = (middle.cost - 1.0) / 9.0
    assert middle.accuracy > (1 - share) * weak + share * 1.0 + 0.1


def test_a_trace_without_the_signal_is_one_clear_error() -> None:
    train, _ = TraceTable.from_rows(rows(with_signals=False)).split(0.5)
    with pytest.raises(DataError, match="self_ref"):
        make_method("self_ref").prepare(train)
