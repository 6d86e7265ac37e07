"""Every lab method on a real trace: the sarcasm classifier ladder (hashing → tfidf → embed).

The trace is recorded here from the real models (trained once into the cache), the
methods are fitted on its train split and judged on its test split.
AutoMix needs self-verification and Self-REF a confidence prompt, which these
classifiers cannot give; they are exercised on LLM traces (README), AutoMix also on
simulated ones (test_lab.py) and Self-REF on built rows (test_answer_signal_methods.py).
"""

from __future__ import annotations

import pytest
from rich.console import Console

from infra.lab.evaluate import LabOptions, evaluate
from infra.lab.registry import METHODS
from infra.recorder import TraceOptions, run_trace

pytestmark = pytest.mark.slow
QUIET = Console(quiet=True)
REAL_METHODS = sorted(name for name in METHODS if not name.startswith("automix") and name != "self_ref")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    trace = tmp_path_factory.mktemp("real") / "sarcasm.jsonl"
    run_trace(TraceOptions("headlines", n=800, seed=3, out=str(trace)), QUIET)
    return evaluate(LabOptions(str(trace), ",".join(REAL_METHODS)), QUIET)


def test_every_method_fits_and_traces_a_curve_across_the_ladder(report: dict) -> None:
    assert [p["name"] for p in report["policies"]] == REAL_METHODS
    singles = [b["points"][0] for b in report["baselines"] if b["name"].startswith("single:")]
    best_single = max(p["accuracy"] for p in singles)
    dearest = max(p["cost"] for p in singles)
    for policy in report["policies"]:
        costs = {round(p["cost"], 15) for p in policy["points"]}
        assert len(costs) >= 3, policy["name"]  # the sweep moves the operating point
        assert min(costs) < dearest, policy["name"]  # it can run cheaper than the dearest tier
        assert policy["best_accuracy"] >= best_single - 0.03, policy["name"]  # and reach about the best tier


def test_budget_aware_methods_recover_the_gap_at_lower_cost_than_uniform_thresholds(report: dict) -> None:
    """On this ladder the top tier costs ~70x the middle one and is no better, so one threshold for
    every tier escalates into it; methods that tune per tier or per budget must do better."""
    apgr = {p["name"]: p["apgr"] for p in report["policies"]}
    assert max(apgr["frugalgpt"], apgr["rational_tuning"]) > apgr["threshold"]
