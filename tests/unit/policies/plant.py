"""A simulated plant for the budget controller: a three-tier ladder whose answers are drawn
like the ``simulated`` backend's (calibrated Beta confidences), decided by the threshold rule."""

from __future__ import annotations

import random
from dataclasses import dataclass

from topics.messages import Result, Status

TIERS = ("small", "medium", "large")
ACCURACY = {"small": 0.6, "medium": 0.75, "large": 0.9}
COST = {"small": 0.001, "medium": 0.004, "large": 0.016}
LATENCY_MS = {"small": 20.0, "medium": 60.0, "large": 400.0}


@dataclass
class Plant:
    rng: random.Random
    hard: bool = False
    """Harder queries: every tier's accuracy drops by 0.15, so more answers escalate."""
    latency_scale: dict[str, float] | None = None

    def confidence(self, tier: str) -> float:
        accuracy = ACCURACY[tier] - (0.15 if self.hard else 0.0)
        a, b = accuracy * 2, (1 - accuracy) * 2
        correct = self.rng.random() < accuracy
        return self.rng.betavariate(a + 1, b) if correct else self.rng.betavariate(a, b + 1)

    def run(self, request_id: str, thresholds: dict[str, float]) -> Result:
        """One request through the ladder under ``thresholds``."""
        cost = latency = 0.0
        path: list[str] = []
        for tier in TIERS:
            c = self.confidence(tier)
            cost += COST[tier]
            latency += LATENCY_MS[tier] * (self.latency_scale or {}).get(tier, 1.0)
            path.append(tier)
            if tier == TIERS[-1] or c >= thresholds.get(tier, 0.5):
                break
        return Result(
            request_id=request_id,
            status=Status.OK,
            tier=path[-1],
            confidence=c,
            total_cost=cost,
            latency_ms=latency,
            path=tuple(path),
        )

