"""A simulated plant for the budget controller: a three-tier ladder whose answers are drawn
like the ``simulated`` backend's (calibrated Beta confidences), decided by the threshold rule."""

from __future__ import annotations

import random
from dataclasses import dataclass

from topics.messages import Request, Result, Status

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

    def confidence(self, tier: str) -> tuple[float, bool]:
        accuracy = ACCURACY[tier] - (0.15 if self.hard else 0.0)
        a, b = accuracy * 2, (1 - accuracy) * 2
        correct = self.rng.random() < accuracy
        return (self.rng.betavariate(a + 1, b) if correct else self.rng.betavariate(a, b + 1)), correct

    def run(self, request_id: str, thresholds: dict[str, float]) -> tuple[Result, list[tuple[str, float]], bool]:
        """One request through the ladder: its Result, the answers' (tier, latency) and correctness."""
        cost = latency = 0.0
        path: list[str] = []
        answers = []
        for tier in TIERS:
            c, correct = self.confidence(tier)
            tier_latency = LATENCY_MS[tier] * (self.latency_scale or {}).get(tier, 1.0)
            cost += COST[tier]
            latency += tier_latency
            path.append(tier)
            answers.append((tier, tier_latency))
            if tier == TIERS[-1] or c >= thresholds.get(tier, 0.5):
                break
        result = Result(
            request_id=request_id,
            status=Status.OK,
            tier=path[-1],
            confidence=c,
            total_cost=cost,
            latency_ms=latency,
            path=tuple(path),
        )
        return result, answers, correct


def request(i: int) -> Request:
    return Request(id=f"r{i}", input="x", created_at=0.0)
