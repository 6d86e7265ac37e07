"""The thresholds the budget controller moves, and the hop limit no policy carries any more."""

from __future__ import annotations

import inspect

import pytest

from policies.answer_signals import SelfRef
from policies.base import PostHocPolicy, SteerableThresholds
from policies.cascades import FrugalGPT, Gatekeeper
from policies.defaults import ConfidenceThreshold
from policies.registry import POST_HOC, make_post_hoc

LADDER = ("small", "medium", "large")


@pytest.mark.parametrize(
    ("policy", "steered"),
    [
        (ConfidenceThreshold(thresholds={"small": 0.4}, default_threshold=0.8), {"small": 0.4, "medium": 0.8}),
        (Gatekeeper(tau=0.6, thresholds={"medium": 0.3}), {"small": 0.6, "medium": 0.3}),
        (SelfRef(tau=0.7), {"small": 0.7, "medium": 0.7}),
        # FrugalGPT steers its chain's stages but the last, whatever the ladder; a stage without a threshold is 0.
        (FrugalGPT(chain=("small", "large"), thresholds={"large": 0.9}), {"small": 0.0}),
    ],
)
def test_steerable_policies_read_and_move_their_thresholds_alike(
    policy: PostHocPolicy, steered: dict[str, float]
) -> None:
    assert isinstance(policy, SteerableThresholds)
    assert policy.steerable_thresholds(LADDER) == steered
    moved = policy.with_thresholds(dict.fromkeys(steered, 0.25))
    assert type(moved) is type(policy)
    assert moved.steerable_thresholds(LADDER) == dict.fromkeys(steered, 0.25)
    assert {**moved.params(), "thresholds": {}} == {**policy.params(), "thresholds": {}}  # nothing else moved


def test_frugalgpt_without_a_chain_steers_nothing() -> None:
    assert FrugalGPT().steerable_thresholds(LADDER) == {}


@pytest.mark.parametrize("name", sorted(POST_HOC))
def test_no_post_hoc_policy_carries_a_hop_limit(name: str) -> None:
    """The hop limit is the deployment's (``verify_answer``); policy files that still say one load."""
    assert "max_hops" not in inspect.signature(POST_HOC[name]).parameters


def test_a_legacy_max_hops_is_dropped_for_every_policy_built_from_params() -> None:
    legacy = {**FrugalGPT(chain=("small", "large")).params(), "max_hops": 16}
    assert make_post_hoc("frugalgpt", legacy) == FrugalGPT(chain=("small", "large"))
    assert make_post_hoc("accept", {"max_hops": 16}).params() == {}
