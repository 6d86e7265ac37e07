"""The default router and verifier decide exactly as documented."""

from __future__ import annotations

import math
import random

import pytest

from policies import CheapestFirst, ConfidenceThreshold, TierInfo, VerdictAction, make_post_hoc, make_pre_call
from policies.decisions import DEFAULT_MAX_HOPS, verify_answer
from topics import Answer, ConfigError, Hints, HistoryEntry, Request, Status, Task

TIERS = (TierInfo("small", 0.001), TierInfo("medium", 0.01), TierInfo("large", 0.1))
RNG = random.Random(0)


def _answer(
    tier: str,
    confidence: float,
    *,
    hop: int = 0,
    history: tuple[HistoryEntry, ...] = (),
    allowed: tuple[str, ...] = (),
    error: str | None = None,
) -> Answer:
    task = Task(Request("r", "q", 0.0), tier, hop=hop, history=history, allowed=allowed)
    return Answer(task, "m", "out", confidence, error=error)


def test_router_starts_at_the_cheapest_allowed_tier() -> None:
    route = CheapestFirst().route(Request("r", "q", 0.0), TIERS, RNG)
    assert (route.start, route.allowed) == ("small", ("small", "medium", "large"))
    hinted = Request("r", "q", 0.0, hints=Hints(allowed_tiers=("large", "medium")))
    assert CheapestFirst().route(hinted, TIERS, RNG).start == "medium"


def test_router_rejects_when_no_allowed_tier_exists() -> None:
    route = CheapestFirst().route(Request("r", "q", 0.0, hints=Hints(allowed_tiers=("huge",))), TIERS, RNG)
    assert route.start is None and route.reason


def test_router_orders_by_cost_not_by_position() -> None:
    tiers = (TierInfo("a", 0.5), TierInfo("b", 0.1))
    assert CheapestFirst().route(Request("r", "q", 0.0), tiers, RNG).start == "b"


def test_verifier_accepts_at_or_above_the_threshold() -> None:
    policy = ConfidenceThreshold(thresholds={"small": 0.8})
    assert policy.decide(_answer("small", 0.8), TIERS, 0.0, RNG).action is VerdictAction.ACCEPT
    verdict = policy.decide(_answer("small", 0.79), TIERS, 0.0, RNG)
    assert (verdict.action, verdict.target) == (VerdictAction.ESCALATE, "medium")


@pytest.mark.parametrize("confidence", [math.nan, math.inf, -1.0, 2.0])
def test_invalid_confidence_is_never_accepted(confidence: float) -> None:
    policy = ConfidenceThreshold(thresholds={"small": 0.0})
    assert policy.decide(_answer("small", confidence), TIERS, 0.0, RNG).action is VerdictAction.ESCALATE


def test_an_answer_with_an_error_is_escalated_even_when_confident() -> None:
    policy = ConfidenceThreshold(thresholds={"small": 0.1})
    assert policy.decide(_answer("small", 0.99, error="timeout"), TIERS, 0.0, RNG).action is VerdictAction.ESCALATE


def test_escalation_skips_tiers_the_router_pruned_and_tiers_that_ran() -> None:
    policy = ConfidenceThreshold(default_threshold=0.9)
    pruned = policy.decide(_answer("small", 0.1, allowed=("small", "large")), TIERS, 0.0, RNG)
    assert pruned.target == "large"


def test_last_tier_stops() -> None:
    verdict = ConfidenceThreshold(default_threshold=0.9).decide(_answer("large", 0.1, hop=2), TIERS, 0.0, RNG)
    assert verdict.action is VerdictAction.STOP


def test_hop_limit_stops() -> None:
    """The hop limit is the deployment's, applied by ``verify_answer`` (not the policy's)."""
    answer = _answer("small", 0.1)
    policy = ConfidenceThreshold(default_threshold=0.9)
    assert policy.decide(answer, TIERS, 0.0, RNG).action is VerdictAction.ESCALATE
    step = verify_answer(answer, policy, TIERS, 0.0, 1, expired=False)
    assert (step.status, step.reason, step.escalation) == (Status.EXHAUSTED, "hop limit 1 reached", None)
    assert verify_answer(answer, policy, TIERS, 0.0, DEFAULT_MAX_HOPS, expired=False).escalation is not None


def test_a_legacy_max_hops_param_is_dropped_so_old_policy_files_load() -> None:
    policy = make_post_hoc("threshold", {"default_threshold": 0.7, "max_hops": 16})
    assert policy == ConfidenceThreshold(default_threshold=0.7)
    assert "max_hops" not in policy.params()


def test_thresholds_are_steerable_below_the_top_tier() -> None:
    policy = ConfidenceThreshold(thresholds={"small": 0.4}, default_threshold=0.8)
    assert policy.steerable_thresholds(["small", "medium", "large"]) == {"small": 0.4, "medium": 0.8}
    moved = policy.with_thresholds({"medium": 0.3})
    assert moved == ConfidenceThreshold(thresholds={"small": 0.4, "medium": 0.3}, default_threshold=0.8)
    assert moved.decide(_answer("medium", 0.35), TIERS, 0.0, RNG).action is VerdictAction.ACCEPT


def test_registry_lists_known_names() -> None:
    pre_call = "cargo, cascade_router, chain, cheapest_first, hybrid_llm, optllm, routellm, select_then_route"
    with pytest.raises(ConfigError, match=f"known: {pre_call}$"):
        make_pre_call("nope")
    post_hoc = "accept, agreement, automix, cascade_routing, frugalgpt, gatekeeper, lm_cascade, self_ref, "
    post_hoc += "semantic_entropy, threshold"
    with pytest.raises(ConfigError, match=f"known: {post_hoc}$"):
        make_post_hoc("nope")
    with pytest.raises(ConfigError, match="bad parameters"):
        make_post_hoc("threshold", {"bogus": 1})
    assert make_post_hoc("threshold", {"default_threshold": 0.7}).params()["default_threshold"] == 0.7
