"""The pre-call routers' decision rules on hand-built models whose outputs are known."""

from __future__ import annotations

import random

import numpy as np
import pytest

from policies.base import TierInfo, VerdictAction
from policies.partners import AcceptAnswer, Agreement
from policies.registry import make_post_hoc, make_pre_call
from policies.routers import (
    Cargo,
    HybridLLM,
    OptLLM,
    RouteLLM,
    SelectThenRoute,
)
from policies.scoring import LinearHeads, MatrixFactorisation, Standardiser
from topics.errors import ConfigError
from topics.messages import Answer, Hints, Request, Task

TIERS = (TierInfo("a", 1.0), TierInfo("b", 2.0), TierInfo("c", 10.0))
NAMES = ("a", "b", "c")
RNG = random.Random(0)
IDENTITY = Standardiser(np.zeros(2), np.ones(2))


def heads(names: tuple[str, ...], rows: list[list[float]], intercept: list[float]) -> LinearHeads:
    """Heads reading the 2-d query vector directly (identity standardisation)."""
    return LinearHeads(names, np.array(rows, dtype=float), np.array(intercept, dtype=float), IDENTITY)


def request(allowed: tuple[str, ...] | None = None) -> Request:
    return Request(id="r1", input="q", created_at=0.0, hints=Hints(allowed_tiers=allowed))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z))


def mf_router(alpha: float) -> RouteLLM:
    # s(m, x) = v_m · x: tier a scores x0, b scores x1, c scores 0.
    mf = MatrixFactorisation(NAMES, np.eye(2), np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), np.ones(2), IDENTITY)
    return RouteLLM(tiers=NAMES, strong="c", alpha=alpha, mf=mf)


def test_routellm_mf_win_rates_are_bradley_terry_on_the_tier_scores() -> None:
    wins = mf_router(0.5).win_rates(np.array([2.0, -1.0]))
    assert wins == pytest.approx({"a": sigmoid(-2.0), "b": sigmoid(1.0)})


@pytest.mark.parametrize(
    ("x", "alpha", "start"),
    [
        ([3.0, 3.0], 0.5, "a"),  # a is likely as good as c: start cheap
        ([-3.0, 3.0], 0.5, "b"),  # a would lose to c, b would not
        ([-3.0, -3.0], 0.5, "c"),  # both lose: the strong tier
        ([-3.0, -3.0], 0.99, "a"),  # a tolerant α sends everything cheap
        ([3.0, 3.0], 0.0, "c"),  # α = 0 sends everything strong
    ],
)
def test_routellm_starts_at_the_cheapest_tier_the_strong_one_would_not_beat(x: list[float], alpha: float,
                                                                              start: str) -> None:  # fmt: skip
    route = mf_router(alpha).route(request(), TIERS, RNG, np.array(x))
    assert route.start == start
    assert route.allowed == NAMES[NAMES.index(start) :]  # the tiers above stay for an error's escalation


def test_routellm_respects_hints_and_a_missing_strong_tier() -> None:
    router = mf_router(0.5)
    assert router.route(request(("b", "c")), TIERS, RNG, np.array([3.0, -3.0])).start == "c"
    # With c paused or not allowed, the best left is the dearest allowed tier.
    assert router.route(request(("a", "b")), TIERS, RNG, np.array([-3.0, -3.0])).start == "b"
    rejected = router.route(request(("zz",)), TIERS, RNG, np.array([0.0, 0.0]))
    assert rejected.start is None and rejected.allowed == ()


def test_routellm_classifier_reads_one_head_per_cheaper_tier() -> None:
    clf = heads(("a", "b"), [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    router = RouteLLM(tiers=NAMES, strong="c", alpha=0.5, classifier=clf)
    assert router.win_rates(np.array([1.0, -1.0])) == pytest.approx({"a": sigmoid(1.0), "b": sigmoid(-1.0)})
    assert router.route(request(), TIERS, RNG, np.array([1.0, -1.0])).start == "b"


def test_routers_refuse_a_missing_vector_and_bad_models() -> None:
    with pytest.raises(ConfigError, match="query vector"):
        mf_router(0.5).route(request(), TIERS, RNG, None)
    with pytest.raises(ConfigError, match="exactly one"):
        RouteLLM(tiers=NAMES, strong="c")
    with pytest.raises(ConfigError, match="strong tier"):
        RouteLLM(tiers=NAMES, strong="zz", classifier=heads(("a",), [[0.0, 0.0]], [0.0]))
    with pytest.raises(ConfigError, match="shape"):
        wrong = {"heads": ["a"], "coef": [[1.0, 2.0, 3.0]], "intercept": [0.0], "mean": [0, 0], "scale": [1, 1]}
        make_pre_call("hybrid_llm", {"tiers": NAMES, "strong": "c", "classifier": wrong})


def test_hybrid_llm_starts_at_the_cheapest_tier_likely_good_enough() -> None:
    clf = heads(("a", "b"), [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    router = HybridLLM(tiers=NAMES, strong="c", tau=0.6, classifier=clf)
    assert router.route(request(), TIERS, RNG, np.array([1.0, 1.0])).start == "a"
    assert router.route(request(), TIERS, RNG, np.array([0.0, 1.0])).start == "b"
    assert router.route(request(), TIERS, RNG, np.array([0.0, 0.0])).start == "c"  # P = 0.5 < τ


def test_optllm_trades_success_probability_against_cost() -> None:
    # P(success): a 0.5, b sigmoid(x1), c 0.9
    predictor = heads(NAMES, [[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [0.0, 0.0, float(np.log(9.0))])
    costs = {"a": 1.0, "b": 2.0, "c": 10.0}
    x = np.array([0.0, 2.0])  # b: 0.88
    assert OptLLM(tiers=NAMES, lam=0.0, predictor=predictor, costs=costs).route(request(), TIERS, RNG, x).start == "c"
    assert OptLLM(tiers=NAMES, lam=0.005, predictor=predictor, costs=costs).route(request(), TIERS, RNG, x).start == "b"
    assert OptLLM(tiers=NAMES, lam=1.0, predictor=predictor, costs=costs).route(request(), TIERS, RNG, x).start == "a"
    with pytest.raises(ConfigError, match="cost of tier 'c'"):
        OptLLM(tiers=NAMES, predictor=predictor, costs={"a": 1.0, "b": 2.0})


def test_cargo_takes_a_clear_argmax_and_lets_the_pairwise_classifier_break_a_tie() -> None:
    regressor = heads(NAMES, [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [0.0, 0.5, 0.55])
    # One pairwise head per ladder pair; "b|c" says c beats b when x1 > 0.
    pairwise = heads(("a|b", "a|c", "b|c"), [[0, 0], [0, 0], [0.0, 1.0]], [0.0, 0.0, 0.0])
    costs = {"a": 0.0, "b": 0.0, "c": 0.0}
    cargo = Cargo(tiers=NAMES, lam=0.0, tau=0.1, regressor=regressor, pairwise=pairwise, costs=costs)
    assert cargo.route(request(), TIERS, RNG, np.array([2.0, 0.0])).start == "a"  # a leads by 1.45
    assert cargo.route(request(), TIERS, RNG, np.array([0.0, 1.0])).start == "c"  # c vs b by 0.05: P(c beats b) .73
    assert cargo.route(request(), TIERS, RNG, np.array([0.0, -1.0])).start == "b"  # the classifier says b
    priced = Cargo(tiers=NAMES, lam=0.1, tau=0.1, regressor=regressor, pairwise=pairwise,
                   costs={"a": 0.0, "b": 1.0, "c": 5.0})  # fmt: skip
    assert priced.route(request(), TIERS, RNG, np.array([0.0, 1.0])).start == "b"  # a 0, b 0.4, c 0.05: b clear


def test_select_then_route_shortlists_by_category_and_starts_cheapest() -> None:
    router = SelectThenRoute(tiers=NAMES, centroids=[[1.0, 0.0], [-1.0, 0.0]], standardiser=IDENTITY.to_json(),
                             shortlists=[["b", "c"], ["a"]])  # fmt: skip
    near_first = router.route(request(), TIERS, RNG, np.array([0.9, 0.1]))
    assert (near_first.start, near_first.allowed) == ("b", ("b", "c"))
    assert router.route(request(), TIERS, RNG, np.array([-2.0, 0.0])).allowed == ("a",)
    # A shortlist the hints rule out falls back to what they allow.
    assert router.route(request(("c",)), TIERS, RNG, np.array([-2.0, 0.0])).allowed == ("c",)
    with pytest.raises(ConfigError, match="shortlist"):
        SelectThenRoute(tiers=NAMES, centroids=[[0.0, 0.0]], standardiser=IDENTITY.to_json(), shortlists=[["zz"]])


def answer(tier: str, confidence: float, features: dict[str, float] | None = None, error: str | None = None,
           allowed: tuple[str, ...] = ()) -> Answer:  # fmt: skip
    task = Task(request=request(), tier=tier, allowed=allowed)
    return Answer(task=task, model=tier, output="x", confidence=confidence, features=features or {}, error=error)


@pytest.mark.parametrize(
    ("features", "confidence", "k", "accepted"),
    [
        ({"agreement": 0.6}, 0.1, 3, True),  # 3 of 5 sampled answers agree: exactly k
        ({"agreement": 0.4}, 0.99, 3, False),  # sampled agreement wins over confidence
        ({"max_prob": 0.8}, 0.1, 4, True),  # P(4 of 5 samples agree | p = .8) = .74
        ({"max_prob": 0.65}, 0.9, 4, False),  # P(4 of 5 | .65) = .43: the confidence is not read
        ({}, 0.4, 3, False),  # no features: the confidence; P(3 of 5 | .4) = .32
        ({}, 0.0, 0, True),  # k = 0 accepts everything
    ],
)
def test_agreement_checks_k_of_n(features: dict[str, float], confidence: float, k: int, accepted: bool) -> None:
    verdict = Agreement(k=k, n=5).decide(answer("a", confidence, features, allowed=("a", "b")), TIERS, 0.0, RNG)
    assert verdict.action is (VerdictAction.ACCEPT if accepted else VerdictAction.ESCALATE)
    if not accepted:
        assert verdict.target == "b"


def test_agreement_escalates_only_within_the_shortlist() -> None:
    verdict = Agreement(k=5, n=5).decide(answer("a", 0.1, allowed=("a", "c")), TIERS, 0.0, RNG)
    assert (verdict.action, verdict.target) == (VerdictAction.ESCALATE, "c")
    with pytest.raises(ConfigError):
        Agreement(k=6, n=5)


def test_accept_answer_accepts_and_escalates_past_errors_only() -> None:
    assert AcceptAnswer().decide(answer("a", 0.0), TIERS, 0.0, RNG).action is VerdictAction.ACCEPT
    failed = AcceptAnswer().decide(answer("a", 0.0, error="timeout"), TIERS, 0.0, RNG)
    assert (failed.action, failed.target) == (VerdictAction.ESCALATE, "b")


def test_every_router_round_trips_through_its_params() -> None:
    """A policy file holds ``params()``; rebuilding from them decides identically."""
    clf = heads(("a", "b"), [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    costs = {"a": 1.0, "b": 2.0, "c": 10.0}
    routers = [
        mf_router(0.4),
        RouteLLM(tiers=NAMES, strong="c", alpha=0.4, classifier=clf),
        HybridLLM(tiers=NAMES, strong="c", tau=0.6, classifier=clf, relaxation={"a": 0.1}),
        OptLLM(tiers=NAMES, lam=0.02, predictor=heads(NAMES, [[1, 0], [0, 1], [1, 1]], [0, 0, 0]), costs=costs),
        Cargo(tiers=NAMES, lam=0.01, tau=0.1, regressor=heads(NAMES, [[1, 0], [0, 1], [1, 1]], [0, 0, 0]),
              pairwise=heads(("a|b", "a|c", "b|c"), [[1, 0], [0, 1], [1, 1]], [0, 0, 0]), costs=costs),
        SelectThenRoute(tiers=NAMES, centroids=[[1.0, 0.0], [-1.0, 0.0]], standardiser=IDENTITY.to_json(),
                        shortlists=[["b", "c"], ["a"]]),
    ]  # fmt: skip
    points = np.random.default_rng(1).normal(0, 2, (40, 2))
    for router in routers:
        rebuilt = make_pre_call(router.name, router.params())
        for x in points:
            assert rebuilt.route(request(), TIERS, RNG, x) == router.route(request(), TIERS, RNG, x), router.name
    for post in (Agreement(k=2, n=4), AcceptAnswer()):
        assert make_post_hoc(post.name, post.params()) == post


def test_routellm_ignores_tiers_dearer_than_its_strong_one() -> None:
    """A dearer tier that is no better (the sarcasm ladder's embeddings) is never a candidate, nor in the share."""
    mf = mf_router(0.5).mf
    router = RouteLLM(tiers=NAMES, strong="b", alpha=0.5, mf=mf)
    x = np.array([-3.0, 3.0])
    assert set(router.win_rates(x)) == {"a"}
    assert router.share_score(x) == pytest.approx(sigmoid(6.0))
    assert router.route(request(), TIERS, RNG, x).start == "b"


def test_a_router_names_the_embedding_it_reads_and_old_files_read_e5() -> None:
    """Vectors of another featuriser would be noise to a fitted router: the name travels in its params."""
    clf = heads(("a", "b"), [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    fitted = HybridLLM(tiers=NAMES, strong="c", tau=0.6, classifier=clf, embedding="ngram-256")
    assert make_pre_call(fitted.name, fitted.params()).embedding == "ngram-256"
    legacy = {k: v for k, v in fitted.params().items() if k != "embedding"}
    assert make_pre_call(fitted.name, legacy).embedding == "e5-small-q4"
    with pytest.raises(ConfigError, match="reads embedding 'glove'"):
        make_pre_call(fitted.name, {**fitted.params(), "embedding": "glove"})
