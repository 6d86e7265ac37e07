"""Post-hoc cascade policies of the survey, with fitted parameters (``infra/lab/fitters.py`` fits them).

* ``gatekeeper`` — Gatekeeper's deferral rule: calibrate one confidence signal per
  tier (max-probability or negative entropy; Platt or isotonic, fitted on the train
  split) and accept when the calibrated P(correct) reaches τ. Rational Tuning runs
  the same rule with per-tier thresholds chosen jointly (``infra/lab/rational.py``).
* ``lm_cascade`` — LM Cascades (Gupta et al.): a logistic deferral model per tier
  on the answer's confidence features (token log-prob quantiles in generate mode,
  option probabilities in choice mode, plus the query's length); defer when its
  P(wrong) exceeds τ.
* ``automix`` — AutoMix: the answering model verifies its own answer (``verify_p``,
  see the LLM backends' ``verify`` option); escalate when ``verify_p <= t`` (threshold
  variant), or look the action up per ``verify_p`` bin in a table fitted by dynamic
  programming on the train split to maximise accuracy - λ·cost (POMDP variant).
* ``frugalgpt`` — FrugalGPT: an ordered chain of tiers (a sub-sequence of the
  ladder, enforced by the ``chain`` router in ``policies/routers.py``) with a
  threshold per stage on a learned answer scorer; the chain and thresholds maximise
  accuracy under a mean-cost budget.

Every policy here is pure: the answer (with its task, request and history) in, a
verdict out; the same objects decide in the verifier and in ``tierflow eval``.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.base import PostHocPolicy, SteerableTau, SteerableThresholds, TierInfo, Verdict, accept_or_escalate
from policies.scoring import Calibrator, LinearScorer, answer_signal
from topics.messages import Answer


def _calibrators(data: Mapping[str, Any]) -> dict[str, Calibrator]:
    return {tier: v if isinstance(v, Calibrator) else Calibrator.from_json(v) for tier, v in data.items()}


def _scorers(data: Mapping[str, Any]) -> dict[str, LinearScorer]:
    return {tier: v if isinstance(v, LinearScorer) else LinearScorer.from_json(v) for tier, v in data.items()}


@dataclass(frozen=True)
class Gatekeeper(SteerableTau, PostHocPolicy):
    """Accept when the tier's calibrated signal reaches its threshold (``thresholds``, else ``tau``).

    Rational Tuning fits per-tier ``thresholds`` for the same rule (``infra/lab/rational.py``).
    """

    calibrators: Mapping[str, Any] = field(default_factory=dict)
    signal: str = "confidence"
    tau: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)

    name = "gatekeeper"

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibrators", _calibrators(self.calibrators))

    def p_correct(self, answer: Answer) -> float:
        calibrator = self.calibrators.get(answer.tier, Calibrator())
        return float(calibrator(answer_signal(answer, self.signal)))

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        p = self.p_correct(answer)
        tau = self.threshold_of(answer.tier)
        return accept_or_escalate(answer, tiers, p >= tau, f"calibrated {p:.3f} vs {tau:.3f}")

    def params(self) -> dict[str, Any]:
        return {
            "calibrators": {tier: c.to_json() for tier, c in self.calibrators.items()},
            "signal": self.signal,
            "tau": self.tau,
            "thresholds": dict(self.thresholds),
        }


@dataclass(frozen=True)
class LMCascade(PostHocPolicy):
    """Defer when the tier's deferral model says P(wrong) > ``tau``."""

    scorers: Mapping[str, Any] = field(default_factory=dict)
    tau: float = 0.5

    name = "lm_cascade"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorers", _scorers(self.scorers))

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        scorer = self.scorers.get(answer.tier)
        p_wrong = 1.0 - scorer.p_correct(answer) if scorer is not None else 0.0
        why = f"P(wrong) {p_wrong:.3f} vs {self.tau:.3f}"
        return accept_or_escalate(answer, tiers, p_wrong <= self.tau, why)

    def params(self) -> dict[str, Any]:
        return {
            "scorers": {tier: s.to_json() for tier, s in self.scorers.items()},
            "tau": self.tau,
        }


def self_verification(answer: Answer) -> float:
    """The answer's ``verify_p``; a tier that cannot verify itself (a recorded tier) offers its confidence."""
    return answer.features.get("verify_p", answer.confidence)


@dataclass(frozen=True)
class AutoMix(PostHocPolicy):
    """Escalate on weak self-verification: by threshold, or by a per-bin action table (POMDP variant).

    ``bins[tier]`` are the inner edges of the tier's ``verify_p`` bins and
    ``actions[tier][b]`` is ``"accept"`` or ``"escalate"`` for bin ``b``; a tier
    without a table uses ``threshold``.
    """

    threshold: float = 0.5
    bins: Mapping[str, Sequence[float]] = field(default_factory=dict)
    actions: Mapping[str, Sequence[str]] = field(default_factory=dict)

    name = "automix"

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        verify_p = self_verification(answer)
        table = self.actions.get(answer.tier)
        if table is not None:
            b = bisect.bisect_right(list(self.bins.get(answer.tier, ())), verify_p)
            accept = table[min(b, len(table) - 1)] == "accept"
            why = f"verify_p {verify_p:.3f} in bin {b}: {table[min(b, len(table) - 1)]}"
        else:
            accept = verify_p > self.threshold
            why = f"verify_p {verify_p:.3f} vs {self.threshold:.3f}"
        return accept_or_escalate(answer, tiers, accept, why)

    def params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "bins": {tier: list(edges) for tier, edges in self.bins.items()},
            "actions": {tier: list(table) for tier, table in self.actions.items()},
        }


@dataclass(frozen=True)
class FrugalGPT(SteerableThresholds, PostHocPolicy):
    """Stop at the first stage of ``chain`` whose scorer reaches that stage's threshold.

    A stage without a threshold accepts any score (0); the last stage always accepts, so
    the budget controller steers every stage but the last (not the ladder's tiers).
    """

    chain: tuple[str, ...] = ()
    thresholds: Mapping[str, float] = field(default_factory=dict)
    scorers: Mapping[str, Any] = field(default_factory=dict)

    name = "frugalgpt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", tuple(self.chain))
        object.__setattr__(self, "scorers", _scorers(self.scorers))

    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        last = not self.chain or answer.tier == self.chain[-1]
        scorer = self.scorers.get(answer.tier)
        score = scorer.p_correct(answer) if scorer is not None else 1.0
        threshold = self.threshold_of(answer.tier)
        why = f"score {score:.3f} vs {threshold:.3f}"
        return accept_or_escalate(answer, tiers, last or score >= threshold, why)

    def fallback_threshold(self) -> float:
        return 0.0

    def steered_tiers(self, tiers: Sequence[str]) -> Sequence[str]:
        return self.chain[:-1]

    def params(self) -> dict[str, Any]:
        return {
            "chain": list(self.chain),
            "thresholds": dict(self.thresholds),
            "scorers": {tier: s.to_json() for tier, s in self.scorers.items()},
        }
