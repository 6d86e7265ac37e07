"""Which requests a pushed policy decides, by mode."""

from __future__ import annotations

import pytest

from topics.rollout import Rollout, RolloutMode, policy_digest

TEXT = '{"name": "x"}'


def _rollout(mode: RolloutMode, share: float = 1.0) -> Rollout:
    return Rollout(policy=TEXT, digest=policy_digest(TEXT), mode=mode, share=share, name="x")


def test_live_decides_all_shadow_none_and_a_canary_its_hashed_share() -> None:
    ids = [f"q{i}" for i in range(10_000)]
    assert all(_rollout(RolloutMode.LIVE).decides(i) for i in ids)
    assert not any(_rollout(RolloutMode.SHADOW).decides(i) for i in ids)
    canary = _rollout(RolloutMode.CANARY, 0.1)
    drawn = [canary.decides(i) for i in ids]
    assert sum(drawn) / len(ids) == pytest.approx(0.1, abs=0.015) and drawn == [canary.decides(i) for i in ids]


def test_the_digest_names_the_exact_text_and_describe_says_the_reach() -> None:
    assert policy_digest(TEXT) != policy_digest(TEXT + " ") and len(policy_digest(TEXT)) == 16
    assert _rollout(RolloutMode.CANARY, 0.25).describe() == f"x {policy_digest(TEXT)} canary on 25% of requests"
