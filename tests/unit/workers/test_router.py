"""Live re-calibration: a router's share to the strong tier holds when live traffic drifts from train."""

from __future__ import annotations

import random

import numpy as np
import pytest

from policies.base import TierInfo
from policies.routers import RouteLLM, share_threshold
from policies.scoring import MatrixFactorisation, Standardiser
from topics.errors import ConfigError
from topics.messages import Request
from workers.router import LiveShare

TIERS = (TierInfo("weak", 1.0), TierInfo("strong", 10.0))
REQUEST = Request(id="r", input="q", created_at=0.0)


def router(alpha: float, window: int) -> RouteLLM:
    # P(strong beats weak | x) = sigmoid(-x0): the weak tier's score is x0, the strong one's 0.
    mf = MatrixFactorisation(("weak", "strong"), np.eye(1), np.array([[1.0], [0.0]]), np.ones(1),
                             Standardiser(np.zeros(1), np.ones(1)))  # fmt: skip
    return RouteLLM(tiers=("weak", "strong"), strong="strong", alpha=alpha, mf=mf, target_share=0.3,
                    live_window=window)  # fmt: skip


def strong_share(policy: RouteLLM, xs: np.ndarray) -> float:
    rng = random.Random(0)
    return float(np.mean([policy.route(REQUEST, TIERS, rng, np.array([x])).start == "strong" for x in xs]))


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_share_threshold_sends_the_chosen_share(share: float) -> None:
    values = np.random.default_rng(1).random(200)
    assert np.mean(values >= share_threshold(values, share)) == pytest.approx(share, abs=1 / 200)


def test_the_live_threshold_holds_the_target_share_when_traffic_drifts() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(0.0, 1.0, 2000)
    fitted = router(0.0, window=500)
    alpha = share_threshold([fitted.share_score(np.array([x])) for x in train], 0.3)
    fitted = router(alpha, window=500)
    live = rng.normal(-1.5, 1.0, 3000)  # harder traffic: the weak tier looks worse on most of it
    assert strong_share(fitted, live) > 0.7  # the train-fitted α sends far more than 30% up

    calibration = LiveShare(fitted.live_window)
    shares = []
    for batch in np.array_split(live, 60):
        policy = calibration.update(fitted, [np.array([x]) for x in batch])
        shares.append(strong_share(policy, batch))  # type: ignore[arg-type]
    assert np.mean(shares[20:]) == pytest.approx(0.3, abs=0.05)


def test_the_fitted_threshold_stands_until_enough_scores_arrive() -> None:
    fitted = router(0.42, window=1000)
    calibration = LiveShare(fitted.live_window)
    assert calibration.update(fitted, [np.array([0.0])] * 10) is fitted
    with pytest.raises(ConfigError):
        router(0.5, window=-1)
