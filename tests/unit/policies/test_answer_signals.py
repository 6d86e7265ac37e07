"""The answer-signal policies (semantic entropy, Self-REF) and their lab methods decide as documented."""

from __future__ import annotations

import json
import math
import random

import pytest

from infra.lab.answer_signal_methods import SelfRefMethod, SemanticEntropyMethod
from infra.lab.evaluate import sweep
from infra.lab.table import TraceTable
from policies.answer_signals import SelfRef, SemanticEntropy
from policies.base import PostHocPolicy, TierInfo, VerdictAction
from policies.decisions import DEFAULT_MAX_HOPS
from topics import Answer, DataError, Request, Task
from topics.traces import TraceRow

TIERS = (TierInfo("small", 0.001), TierInfo("medium", 0.01), TierInfo("large", 0.1))
RNG = random.Random(0)


def _answer(tier: str, features: dict[str, float], *, error: str | None = None) -> Answer:
    return Answer(Task(Request("r", "q", 0.0), tier), "m", "out", 0.5, features=features, error=error)


def _decide(policy: PostHocPolicy, tier: str, **features: float) -> VerdictAction:
    return policy.decide(_answer(tier, features), TIERS, 0.0, RNG).action


def test_semantic_entropy_accepts_at_or_below_tau_and_offloads_above() -> None:
    policy = SemanticEntropy(tau=0.5)
    assert _decide(policy, "small", semantic_entropy=0.5) is VerdictAction.ACCEPT
    assert _decide(policy, "small", semantic_entropy=0.0) is VerdictAction.ACCEPT
    verdict = policy.decide(_answer("small", {"semantic_entropy": 0.5001}), TIERS, 0.0, RNG)
    assert (verdict.action, verdict.target) == (VerdictAction.ESCALATE, "medium")
    assert _decide(policy, "large", semantic_entropy=1.0) is VerdictAction.STOP  # nowhere left to offload to


def test_semantic_entropy_uses_per_tier_thresholds_before_tau() -> None:
    policy = SemanticEntropy(tau=0.1, thresholds={"medium": 1.0})
    assert _decide(policy, "medium", semantic_entropy=0.9) is VerdictAction.ACCEPT
    assert _decide(policy, "small", semantic_entropy=0.9) is VerdictAction.ESCALATE


def test_semantic_entropy_falls_back_to_the_choice_mode_option_entropy() -> None:
    policy = SemanticEntropy(tau=0.5)
    assert _decide(policy, "small", entropy=0.2) is VerdictAction.ACCEPT
    assert _decide(policy, "small", entropy=1.2) is VerdictAction.ESCALATE
    assert _decide(policy, "small", entropy=0.2, semantic_entropy=1.2) is VerdictAction.ESCALATE  # the sampled one wins


@pytest.mark.parametrize("features", [{}, {"semantic_entropy": math.nan}, {"entropy": math.nan}])
def test_semantic_entropy_missing_or_nan_is_never_accepted(features: dict[str, float]) -> None:
    verdict = SemanticEntropy(tau=10.0).decide(_answer("small", features), TIERS, 0.0, RNG)
    assert verdict.action is VerdictAction.ESCALATE


def test_self_ref_accepts_at_or_above_tau() -> None:
    policy = SelfRef(tau=0.7, thresholds={"medium": 0.9})
    assert _decide(policy, "small", self_ref=0.7) is VerdictAction.ACCEPT
    assert _decide(policy, "small", self_ref=0.6999) is VerdictAction.ESCALATE
    assert _decide(policy, "medium", self_ref=0.8) is VerdictAction.ESCALATE
    assert _decide(policy, "medium", self_ref=0.9) is VerdictAction.ACCEPT


@pytest.mark.parametrize("features", [{}, {"self_ref": math.nan}, {"verify_p": 1.0}])
def test_self_ref_missing_or_nan_is_escalated_not_accepted_nor_rejected(features: dict[str, float]) -> None:
    policy = SelfRef(tau=0.0, reject_below=0.5)
    assert policy.decide(_answer("small", features), TIERS, 0.0, RNG).action is VerdictAction.ESCALATE


def test_self_ref_rejects_below_reject_below_with_stop() -> None:
    policy = SelfRef(tau=0.8, reject_below=0.3)
    verdict = policy.decide(_answer("small", {"self_ref": 0.29}), TIERS, 0.0, RNG)
    assert verdict.action is VerdictAction.STOP and "rejected" in verdict.reason
    assert _decide(policy, "small", self_ref=0.3) is VerdictAction.ESCALATE  # the boundary is not rejected
    assert _decide(policy, "small", self_ref=0.8) is VerdictAction.ACCEPT


def test_an_answer_with_an_error_is_escalated_by_both() -> None:
    broken = _answer("small", {"self_ref": 0.0, "semantic_entropy": 0.0}, error="boom")
    assert SemanticEntropy(tau=1.0).decide(broken, TIERS, 0.0, RNG).action is VerdictAction.ESCALATE
    assert SelfRef(tau=0.0, reject_below=0.5).decide(broken, TIERS, 0.0, RNG).action is VerdictAction.ESCALATE


@pytest.mark.parametrize(
    "policy",
    [
        SemanticEntropy(tau=0.7, thresholds={"small": 0.2}),
        SelfRef(tau=0.6, thresholds={"medium": 0.9}, reject_below=0.1),
    ],
)
def test_params_round_trip_through_json(policy: SemanticEntropy | SelfRef) -> None:
    params = json.loads(json.dumps(policy.params()))
    assert type(policy)(**params) == policy
    assert policy.name in ("semantic_entropy", "self_ref")


def test_self_ref_thresholds_are_steerable() -> None:
    policy = SelfRef(tau=0.6, thresholds={"small": 0.7})
    assert policy.steerable_thresholds(["small", "medium", "large"]) == {"small": 0.7, "medium": 0.6}
    moved = policy.with_thresholds({"medium": 0.2})
    assert _decide(moved, "medium", self_ref=0.3) is VerdictAction.ACCEPT
    assert SemanticEntropy().steerable_thresholds(["small", "large"]) is None


def _row(item: str, tier: str, correct: bool, features: dict[str, float], cost: float) -> TraceRow:
    return TraceRow(item, "t", "q", "A", tier, "m", "A" if correct else "B", correct, 0.5, features, cost=cost)


def _table(features_of: dict[str, str]) -> TraceTable:
    """40 items; the small tier is right exactly when its signal says so."""
    rows = []
    for i in range(40):
        right = i % 2 == 0
        signals = {"semantic_entropy": 0.0 if right else 1.2, "self_ref": 0.9 if right else 0.2}
        small = {features_of.get(k, k): v for k, v in signals.items() if features_of.get(k, k)}
        rows += [_row(f"i{i}", "small", right, small, 1.0), _row(f"i{i}", "large", True, {}, 10.0)]
    return TraceTable.from_rows(rows)


@pytest.mark.parametrize("method", [SemanticEntropyMethod, SelfRefMethod])
def test_methods_sweep_from_accept_all_to_escalate_all(method: type[SemanticEntropyMethod | SelfRefMethod]) -> None:
    train, test = _table({}).split(0.5)
    result = sweep(method(), train, test, max_hops=DEFAULT_MAX_HOPS)
    points = {(round(p.cost, 6), round(p.accuracy, 6)) for p in result.test}
    costs = [p.cost for p in result.test]
    assert min(costs) == pytest.approx(1.0) and max(costs) == pytest.approx(11.0)
    assert any(acc == 1.0 and cost < 11.0 for cost, acc in points)  # a perfect signal: escalate only the wrong ones


@pytest.mark.parametrize(
    ("method", "hide", "missing"),
    [(SemanticEntropyMethod, "semantic_entropy", "semantic_entropy"), (SelfRefMethod, "self_ref", "self_ref")],
)
def test_methods_name_the_missing_feature(
    method: type[SemanticEntropyMethod | SelfRefMethod], hide: str, missing: str
) -> None:
    with pytest.raises(DataError, match=missing):
        method().prepare(_table({hide: ""}))


def test_semantic_entropy_method_accepts_a_choice_mode_trace() -> None:
    table = _table({"semantic_entropy": "entropy"})
    SemanticEntropyMethod().prepare(table)  # no DataError: the option entropy is the same signal
