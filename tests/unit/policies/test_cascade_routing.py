"""Cascade routing: the best-set rule, the router's first step and the verifier's later ones,
through the same ``decisions`` functions the stages call."""

from __future__ import annotations

import random

import numpy as np
import pytest

from policies.base import TierInfo, VerdictAction
from policies.cascade_routing import CascadeRouter, CascadeRouting, best_set, expected_max
from policies.decisions import final_result, route_request, verify_answer
from policies.registry import make_post_hoc, make_pre_call
from policies.scoring import LinearHeads, LinearScorer, Standardiser
from topics.errors import ConfigError
from topics.messages import Answer, Request, Status, Task

TIERS = (TierInfo("a", 1.0), TierInfo("b", 2.0), TierInfo("c", 10.0))
NAMES = ("a", "b", "c")
COSTS = {"a": 1.0, "b": 2.0, "c": 10.0}
SIGMA = {"a": 0.2, "b": 0.2, "c": 0.2}
RNG = random.Random(0)


def test_expected_max_of_one_is_its_mean_and_grows_with_members_and_spread() -> None:
    assert expected_max([0.7], [0.3]) == pytest.approx(0.7, abs=1e-12)
    assert expected_max([], []) == 0.0
    two = expected_max([0.5, 0.5], [0.1, 0.1])
    assert two > 0.5 + 0.05  # E[max of two N(.5, .1²)] = .5 + .1/sqrt(pi) = .556
    assert two == pytest.approx(0.5 + 0.1 / np.sqrt(np.pi), abs=0.01)
    assert expected_max([0.5, 0.5], [0.2, 0.2]) > two


def test_best_set_prices_only_the_tiers_not_yet_run() -> None:
    mu = {"a": 0.6, "b": 0.7, "c": 0.9}
    assert best_set((), NAMES, mu, SIGMA, COSTS, 0.0) == NAMES  # free calls: everything helps
    assert best_set((), NAMES, mu, SIGMA, COSTS, 10.0) == ()  # nothing is worth its price
    assert best_set((), NAMES, mu, SIGMA, COSTS, 0.01) == ("c",) or "c" in best_set((), NAMES, mu, SIGMA, COSTS, 0.01)
    # Once a ran with a confident post-hoc estimate (known: σ 0), c's price is not worth the small gain.
    assert best_set(("a",), ("b", "c"), {**mu, "a": 0.97}, {**SIGMA, "a": 0.0}, COSTS, 0.01) == ()


def router(lam: float) -> CascadeRouter:
    # Ex ante: a 0.5, b sigmoid(x0), c 0.9 (identity standardisation of a 2-d query vector).
    ex_ante = LinearHeads(NAMES, np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),
                          np.array([0.0, 0.0, float(np.log(9.0))]), Standardiser(np.zeros(2), np.ones(2)))  # fmt: skip
    return CascadeRouter(tiers=NAMES, lam=lam, ex_ante=ex_ante, sigma=SIGMA, costs=COSTS)


def verifier(lam: float) -> CascadeRouting:
    # Post hoc: P(correct) = sigmoid(4·(confidence - 0.5) + 2·(ex_ante - 0.5)), the same for every tier.
    scorer = LinearScorer(("confidence", "ex_ante"), (4.0, 2.0), -3.0, (0.0, 0.0), (1.0, 1.0))
    return CascadeRouting(tiers=NAMES, lam=lam, post_hoc=dict.fromkeys(NAMES, scorer), sigma=SIGMA, costs=COSTS)


def first_task(lam: float, x: list[float]) -> Task:
    request = Request(id="r1", input="q", created_at=0.0)
    routed = route_request(request, router(lam), TIERS, 0, np.array(x))
    assert routed.status is None
    return routed.task


def test_the_router_starts_at_the_cheapest_tier_of_the_best_set_and_records_its_estimates() -> None:
    task = first_task(0.005, [3.0, 0.0])
    assert task.tier == "b"  # b is 0.95 ex ante: a is not worth running first (pre-call pruning)
    assert task.allowed == NAMES
    assert task.estimates == pytest.approx({"a": 0.5, "b": 1 / (1 + np.exp(-3.0)), "c": 0.9})
    assert first_task(0.0, [0.0, 0.0]).tier == "a"  # everything in the set: the cheapest first
    assert first_task(1.0, [0.0, 0.0]).tier == "a"  # nothing worth it: still answer, cheapest


def answer_of(task: Task, confidence: float, error: str | None = None) -> Answer:
    return Answer(task=task, model=task.tier, output=f"out-{task.tier}", confidence=confidence, error=error)


def test_a_confident_answer_ends_the_cascade_and_a_weak_one_escalates_with_its_post_hoc_estimate() -> None:
    task = first_task(0.001, [0.0, 0.0])  # a cheap λ starts at a; the verifier below prices calls higher
    assert task.tier == "a"
    strong = verify_answer(answer_of(task, 0.99), verifier(0.01), TIERS, 0.0, 8, expired=False)
    assert strong.status is Status.OK
    weak = verify_answer(answer_of(task, 0.05), verifier(0.01), TIERS, 0.0, 8, expired=False)
    assert weak.status is None and weak.escalation is not None
    escalated = weak.escalation
    post_a = 1 / (1 + np.exp(-(4 * 0.05 + 2 * 0.5 - 3.0)))
    assert escalated.estimates["a"] == pytest.approx(post_a)  # the ex-ante estimate became a post-hoc one
    assert escalated.estimates["c"] == pytest.approx(0.9)
    assert escalated.tier in ("b", "c")


def test_the_delivered_answer_is_the_best_estimated_one_not_always_the_last() -> None:
    task = first_task(0.001, [0.0, 0.0])
    step = verify_answer(answer_of(task, 0.3), verifier(0.01), TIERS, 0.0, 8, expired=False)
    assert step.escalation is not None
    second = step.escalation
    # The next tier is very unsure; with nothing left worth its price, a's answer is delivered.
    expensive = CascadeRouting(**{**verifier(0.01).params(), "lam": 5.0})
    last = answer_of(second, 0.0)
    decided = verify_answer(last, expensive, TIERS, 0.0, 8, expired=False)
    assert decided.status is Status.OK and decided.deliver == "a"
    result = final_result(second, Status.OK, last, None, 0.0, deliver=decided.deliver)
    assert (result.tier, result.output, result.path) == ("a", "out-a", ("a", second.tier))


def test_errors_count_as_no_quality_and_the_hop_limit_stops() -> None:
    task = first_task(0.001, [0.0, 0.0])
    failed = verifier(0.01).decide(answer_of(task, 0.99, error="timeout"), TIERS, 0.0, RNG)
    assert failed.action is VerdictAction.ESCALATE and failed.estimates is not None and failed.estimates["a"] == 0.0
    # The deployment's hop limit (verify_answer's, not the policy's): a wants to go on, the limit stops it
    # and the best answer that ran is delivered.
    eager = verifier(0.0)
    assert eager.decide(answer_of(task, 0.05), TIERS, 0.0, RNG).action is VerdictAction.ESCALATE
    capped = verify_answer(answer_of(task, 0.05), eager, TIERS, 0.0, 1, expired=False)
    assert (capped.status, capped.reason, capped.escalation) == (Status.EXHAUSTED, "hop limit 1 reached", None)
    result = final_result(task, Status.EXHAUSTED, answer_of(task, 0.05), capped.reason, 0.0)
    assert (result.tier, result.output) == ("a", "out-a")
    # Nowhere to go (a alone is allowed): deliver the best that ran, or stop when none answered.
    only_a = Task(request=task.request, tier="a", allowed=("a",), estimates=task.estimates)
    verdict = eager.decide(answer_of(only_a, 0.05), TIERS, 0.0, RNG)
    assert (verdict.action, verdict.deliver) == (VerdictAction.ACCEPT, "a")
    alone = eager.decide(answer_of(only_a, 0.05, error="boom"), TIERS, 0.0, RNG)
    assert (alone.action, alone.reason) == (VerdictAction.STOP, "boom")


def test_params_round_trip_and_bad_params_fail_in_one_line() -> None:
    x = np.random.default_rng(2).normal(0, 2, (30, 2))
    rebuilt = make_pre_call("cascade_router", router(0.02).params())
    request = Request(id="r1", input="q", created_at=0.0)
    for row in x:
        assert rebuilt.route(request, TIERS, RNG, row) == router(0.02).route(request, TIERS, RNG, row)
    assert make_post_hoc("cascade_routing", verifier(0.02).params()) == verifier(0.02)
    with pytest.raises(ConfigError, match="sigma of tier 'b'"):
        make_post_hoc("cascade_routing", {**verifier(0.0).params(), "sigma": {"a": 0.1}})
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        make_pre_call("cascade_router", {**router(0.0).params(), "sigma": {"a": 2.0, "b": 0.1, "c": 0.1}})
