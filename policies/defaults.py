"""The default policies: start at the cheapest allowed tier, escalate below a threshold."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.base import (
    PostHocPolicy,
    PreCallPolicy,
    Route,
    SteerableThresholds,
    TierInfo,
    Verdict,
    accept_or_escalate,
    allowed_tiers,
)
from policies.features import FloatVector
from topics.messages import Answer, Request


@dataclass(frozen=True)
class CheapestFirst(PreCallPolicy):
    """Allow every tier the request's hints allow; start at the cheapest of them."""

    name = "cheapest_first"

    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        allowed = allowed_tiers(request, tiers)
        if not allowed:
            return Route(allowed=(), start=None, reason="no allowed tier is configured")
        by_cost = {tier.name: tier.cost for tier in tiers}
        return Route(allowed=allowed, start=min(allowed, key=lambda name: by_cost[name]))


@dataclass(frozen=True)
class ConfidenceThreshold(SteerableThresholds, PostHocPolicy):
    """Accept when the tier's confidence reaches its threshold, else escalate up the ladder.

    An answer with an error, or a confidence that is not a finite number in [0, 1],
    is never accepted (``nan >= t`` is False, but we do not rely on that). After the
    last allowed tier the verdict is STOP: the stage delivers the best answer seen with
    status ``exhausted`` (as it does at the deployment's hop limit, ``verify_answer``'s).
    The budget controller steers ``thresholds`` (``SteerableThresholds``).
    """

    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Per-tier acceptance threshold; a tier missing here uses ``default_threshold``."""
    default_threshold: float = 0.5

    name = "threshold"

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        threshold = self.threshold_of(answer.tier)
        valid = math.isfinite(answer.confidence) and 0.0 <= answer.confidence <= 1.0
        accept = valid and answer.confidence >= threshold
        why = f"confidence {answer.confidence:.3f} {'>=' if accept else '<'} {threshold}"
        return accept_or_escalate(answer, tiers, accept, why)

    def fallback_threshold(self) -> float:
        return self.default_threshold

    def params(self) -> dict[str, Any]:
        return {"thresholds": dict(self.thresholds), "default_threshold": self.default_threshold}
