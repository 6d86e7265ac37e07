"""Post-hoc partners of the pre-call routers (``policies/routers.py``).

A learned router already chose the tier that should answer, so its post-hoc side has
little to judge: ``accept`` takes every answer (escalating only past a tier that failed
with an error), and ``agreement`` (Select-Then-Route's) escalates within the router's
shortlist when a k-of-n agreement check on the answer fails. They decide after an
answer, so they live with the other post-hoc policies' kind, not with the routers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from policies.base import PostHocPolicy, TierInfo, Verdict, accept_or_escalate
from topics.errors import ConfigError
from topics.messages import Answer


def agreement_passes(answer: Answer, k: int, n: int) -> tuple[bool, str]:
    """Whether at least ``k`` of ``n`` samples agree with the answer, and why.

    A tier that sampled reports the share that agreed (``agreement``): the check is
    that share. Otherwise the check is the one n samples would pass more often than
    not: P(Binomial(n, p) >= k) >= 1/2, p being the answer's probability
    (``max_prob``, else its confidence).
    """
    features = answer.features
    if "agreement" in features:
        share = features["agreement"]
        return share * n >= k - 1e-9, f"{share:.2f} of samples agree, need {k}/{n}"
    p = min(max(float(features.get("max_prob", answer.confidence)), 0.0), 1.0)
    chance = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
    return chance >= 0.5, f"P({k} of {n} agree) {chance:.2f}"


@dataclass(frozen=True)
class Agreement(PostHocPolicy):
    """Accept when at least ``k`` of ``n`` samples agree with the answer, else escalate (within the shortlist).

    ``k = 0`` accepts every answer: the shortlist's cheapest tier alone.
    """

    k: int = 3
    n: int = 5

    name = "agreement"

    def __post_init__(self) -> None:
        if not 0 <= self.k <= self.n:
            raise ConfigError(f"agreement needs 0 <= k <= n, got k={self.k}, n={self.n}")

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        ok, why = agreement_passes(answer, self.k, self.n)
        return accept_or_escalate(answer, tiers, ok, why)

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n}


@dataclass(frozen=True)
class AcceptAnswer(PostHocPolicy):
    """Accept every answer; escalate only past a tier that failed with an error (the routers' partner)."""

    name = "accept"

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        return accept_or_escalate(answer, tiers, True, "routed")
