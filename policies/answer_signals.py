"""Post-hoc policies on answer-side signals: semantic entropy and Self-REF confidence tokens.

Both read a feature the LLM backends compute after answering (``workers/backends/llm.py``):

* ``semantic_entropy`` — Semantic entropy (Kuhn et al.): the entropy (nats) of the
  answer's samples over meaning clusters (``samples > 1`` in generate mode; the
  clusters are normalised-answer equivalence classes). High entropy means the model
  gives different answers when asked again, so the answer is offloaded to the next
  tier: accept when ``semantic_entropy <= τ`` (per tier in ``thresholds``, else
  ``tau``). In choice mode the option distribution's ``entropy`` is the exact
  semantic entropy (each option its own cluster, probabilities read rather than
  sampled), so an answer without ``semantic_entropy`` is judged on ``entropy``.
* ``self_ref`` — Self-REF (Chuang et al.): the model's confidence token after its
  answer, ``self_ref = P(confident) / (P(confident) + P(unconfident))`` (the
  ``self_ref`` tier option). Accept when ``self_ref >= τ``, else escalate; with
  ``reject_below`` an answer whose ``self_ref`` falls below it is *rejected*
  instead: the verdict is ``STOP``, which ends the request as ``exhausted`` and
  delivers the most confident answer seen so far (the stream's rule for every
  exhausted request) rather than paying for a higher tier.

A missing or NaN signal never accepts: an answer that could not be scored is
escalated like a doubtful one (and a NaN is never rejected, as nothing says the
model is sure it is wrong). Both policies are pure: the answer in, a verdict out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.base import PostHocPolicy, SteerableTau, TierInfo, Verdict, VerdictAction, accept_or_escalate
from topics.messages import Answer


def semantic_entropy_of(answer: Answer) -> float:
    """The answer's ``semantic_entropy``, else choice mode's option ``entropy``, else NaN."""
    features = answer.features
    return float(features.get("semantic_entropy", features.get("entropy", math.nan)))


def self_ref_of(answer: Answer) -> float:
    """The answer's ``self_ref`` confidence, NaN when the tier did not ask for it."""
    return float(answer.features.get("self_ref", math.nan))


@dataclass(frozen=True)
class SemanticEntropy(PostHocPolicy):
    """Accept when the answer's semantic entropy is at most the tier's τ; offload it otherwise.

    Not steerable by the budget controller: its thresholds are upper bounds on a
    quantity in nats, not the "accept when score >= θ, θ in [0, 1]" the controller moves.
    """

    tau: float = 0.5
    """Nats; with n samples the entropy lies in [0, log n]."""
    thresholds: Mapping[str, float] = field(default_factory=dict)

    name = "semantic_entropy"

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        entropy = semantic_entropy_of(answer)
        tau = self.thresholds.get(answer.tier, self.tau)
        accept = math.isfinite(entropy) and entropy <= tau
        return accept_or_escalate(answer, tiers, accept, f"semantic entropy {entropy:.3f} vs {tau:.3f}")

    def params(self) -> dict[str, Any]:
        return {"tau": self.tau, "thresholds": dict(self.thresholds)}


@dataclass(frozen=True)
class SelfRef(SteerableTau, PostHocPolicy):
    """Accept when ``self_ref`` reaches the tier's τ; below ``reject_below``, reject (STOP); else escalate."""

    tau: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    reject_below: float = 0.0
    """0: never reject. Meant to sit below the thresholds; an answer below it is not escalated."""

    name = "self_ref"

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        confidence = self_ref_of(answer)
        tau = self.threshold_of(answer.tier)
        why = f"self_ref {confidence:.3f} vs {tau:.3f}"
        scored = math.isfinite(confidence)
        if scored and answer.error is None and confidence < self.reject_below:
            return Verdict(VerdictAction.STOP, reason=f"{why}; rejected below {self.reject_below:.3f}")
        return accept_or_escalate(answer, tiers, scored and confidence >= tau, why)

    def params(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "thresholds": dict(self.thresholds),
            "reject_below": self.reject_below,
        }
