"""The two policy interfaces the pipeline runs: pre-call (router) and post-hoc (verifier).

Policies are pure: features in, decision out. No I/O; the clock and randomness are
passed in, so the same code answers identically in the stream and in offline
evaluation over a recorded trace.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from policies.features import FloatVector
from topics.errors import ConfigError
from topics.messages import Answer, Request


@dataclass(frozen=True, slots=True)
class TierInfo:
    """What a policy knows about a tier without calling it."""

    name: str
    cost: float
    """Expected cost per call (the portfolio's unit), used to order and price tiers."""


@dataclass(frozen=True, slots=True)
class Route:
    """A router's decision: which tiers may answer and which runs first."""

    allowed: tuple[str, ...]
    """Cheapest first; escalation only ever moves within this set."""
    start: str | None
    """``None`` rejects the request (no allowed tier)."""
    reason: str = ""
    estimates: Mapping[str, float] = field(default_factory=dict)
    """Ex-ante quality estimates per tier, carried in the task for a post-hoc policy that reads them."""


class VerdictAction(StrEnum):
    """What a post-hoc policy says of an answer (not ``topics.control``'s command kinds)."""

    ACCEPT = "accept"
    ESCALATE = "escalate"
    STOP = "stop"
    """Deliver the best answer seen so far, status ``exhausted``."""


@dataclass(frozen=True, slots=True)
class Verdict:
    action: VerdictAction
    target: str | None = None
    """The tier to escalate to (only with ``ESCALATE``)."""
    reason: str = ""
    estimates: Mapping[str, float] | None = None
    """With ``ESCALATE``: the quality estimates the escalated task carries (``None`` keeps the task's)."""
    deliver: str = ""
    """With ``ACCEPT``: the tier (this one or one in the history) whose answer is delivered; "" means this answer."""


class PreCallPolicy(ABC):
    """Decides, before any model runs, where a request starts."""

    name: str = ""
    family: str = "pre-call"
    needs_features: bool = False
    """True when ``route`` reads the query vector (``policies/features.py``); the router computes it."""
    embedding: str = ""
    """With ``needs_features``: the query embedding (``policies/features.EMBEDDINGS``) it was fitted on."""
    query_prefix: str = ""
    """With ``needs_features``: the prefix every fitted query shared, stripped before featurising
    (``policies.features.shared_prefix``)."""

    @abstractmethod
    def route(
        self, request: Request, tiers: tuple[TierInfo, ...], rng: random.Random, features: FloatVector | None = None
    ) -> Route:
        """Choose the allowed tiers and the start tier for ``request`` (``features``: its query vector)."""

    def params(self) -> dict[str, Any]:
        """Fitted parameters, for the policy file."""
        return {}

    live_window: int = 0
    """> 0: the router re-calibrates this policy's threshold on the scores of the last ``live_window``
    requests it routed, so the share of traffic it sends up holds on live traffic (see ``share_score``)."""
    target_share: float = 0.0

    def share_score(self, features: FloatVector) -> float:
        """The score whose quantile is the threshold (only for policies with a ``live_window``)."""
        raise ConfigError(f"policy {self.name!r} has no threshold to re-calibrate on live traffic")

    def with_share_threshold(self, threshold: float) -> PreCallPolicy:
        """This policy with the threshold the live scores gave."""
        raise ConfigError(f"policy {self.name!r} has no threshold to re-calibrate on live traffic")


class PostHocPolicy(ABC):
    """Decides, after a tier answered, whether to accept, escalate or stop."""

    name: str = ""
    family: str = "post-hoc"

    @abstractmethod
    def decide(self, answer: Answer, tiers: tuple[TierInfo, ...], now: float, rng: random.Random) -> Verdict:
        """Judge ``answer`` (its task carries the request, allowed tiers and history)."""

    def params(self) -> dict[str, Any]:
        return {}

    def steerable_thresholds(self, tiers: Sequence[str]) -> dict[str, float] | None:
        """The per-tier "accept when score >= θ" thresholds the budget controller may move.

        ``None`` for a policy without such thresholds (the controller then only pauses tiers).
        The top tier is left out: nothing escalates from it.
        """
        return None

    def with_thresholds(self, thresholds: Mapping[str, float]) -> PostHocPolicy:
        """This policy with the given thresholds (only for steerable policies)."""
        raise ConfigError(f"policy {self.name!r} has no thresholds the budget controller can move")


class SteerableThresholds(ABC):
    """For policies that accept when a score in [0, 1] reaches ``thresholds[tier]`` (else a
    fallback): the one implementation of reading and moving those thresholds, so the budget
    controller steers every such policy the same way. Mixed into frozen dataclasses that have
    a ``thresholds`` field; the policy names its fallback (``fallback_threshold``) and, when not
    every tier below the top one is steered, which tiers are (``steered_tiers``).
    """

    thresholds: Mapping[str, float]

    @abstractmethod
    def fallback_threshold(self) -> float:
        """The threshold of a tier that ``thresholds`` does not name."""

    def steered_tiers(self, tiers: Sequence[str]) -> Sequence[str]:
        """The tiers whose thresholds the controller moves: all but the top one (nothing escalates from it)."""
        return tiers[:-1]

    def threshold_of(self, tier: str) -> float:
        """The acceptance threshold of ``tier``."""
        return self.thresholds.get(tier, self.fallback_threshold())

    def steerable_thresholds(self, tiers: Sequence[str]) -> dict[str, float] | None:
        return {tier: self.threshold_of(tier) for tier in self.steered_tiers(tiers)}

    def with_thresholds(self, thresholds: Mapping[str, float]) -> PostHocPolicy:
        policy: Any = self  # a frozen dataclass, by the mixin's contract
        replaced: PostHocPolicy = dataclasses.replace(policy, thresholds={**self.thresholds, **thresholds})
        return replaced


class SteerableTau(SteerableThresholds):
    """``SteerableThresholds`` whose fallback is the policy's ``tau`` field (the survey's τ)."""

    tau: float

    def fallback_threshold(self) -> float:
        return self.tau


def allowed_tiers(request: Request, tiers: tuple[TierInfo, ...]) -> tuple[str, ...]:
    """The configured tiers the request's hints allow, in ladder order."""
    names = tuple(tier.name for tier in tiers)
    if request.hints.allowed_tiers is None:
        return names
    wanted = set(request.hints.allowed_tiers)
    return tuple(name for name in names if name in wanted)


def next_tier(answer: Answer, tiers: tuple[TierInfo, ...]) -> str | None:
    """The next tier up the ladder from ``answer``'s tier that the task allows and has not run."""
    allowed = answer.task.allowed or tuple(tier.name for tier in tiers)
    ran = {entry.tier for entry in answer.task.history} | {answer.tier}
    order = [tier.name for tier in tiers]
    if answer.tier not in order:
        return None
    above = order[order.index(answer.tier) + 1 :]
    return next((name for name in above if name in allowed and name not in ran), None)


def accept_or_escalate(answer: Answer, tiers: tuple[TierInfo, ...], accept: bool, why: str) -> Verdict:
    """ACCEPT when ``accept`` (and the answer is not an error), else ESCALATE up the ladder, else STOP.

    No hop limit here: that is a deployment limit, applied once for every policy by
    ``policies.decisions.verify_answer``.
    """
    if accept and answer.error is None:
        return Verdict(VerdictAction.ACCEPT, reason=why)
    why = answer.error or why
    target = next_tier(answer, tiers)
    if target is None:
        return Verdict(VerdictAction.STOP, reason=f"{why}; no higher tier")
    return Verdict(VerdictAction.ESCALATE, target=target, reason=why)
