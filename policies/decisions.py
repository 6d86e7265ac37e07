"""The decision steps of the router and verifier as pure functions, shared with the policy lab.

The stream and the offline evaluation (``infra/lab``) must take the same path for
the same request: both call these functions, so the verifier stage is only Kafka
plumbing around them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from policies.base import PostHocPolicy, PreCallPolicy, TierInfo, VerdictAction
from policies.features import FloatVector
from topics.messages import Answer, Decision, HistoryEntry, Request, Result, Status, Task

DEFAULT_MAX_HOPS = 8
"""The most tier calls one request may make (its first tier and every escalation), unless the
deployment says otherwise (``[limits] max_hops``). A deployment limit, not a policy's: policies
only say accept, escalate or stop, and ``verify_answer`` alone refuses an escalation past it."""


def hop_limit(tier_count: int) -> int:
    """The default hop limit of a portfolio: :data:`DEFAULT_MAX_HOPS`, or its tier count when that is
    more, so a cascade can always reach its last tier (a lower limit must be configured on purpose)."""
    return max(DEFAULT_MAX_HOPS, tier_count)


class LazyRandom(random.Random):
    """A ``random.Random`` that seeds itself at its first draw.

    Seeding costs about 7 µs (a SHA-512 of the seed and the Mersenne Twister's state),
    a tenth of a verifier's whole cost per answer, and no built-in policy draws at all;
    every draw goes through ``random()`` or ``getrandbits()``, so a lazy seed changes no
    sequence.
    """

    def __init__(self, seed: str) -> None:  # random.Random.__init__ would seed now
        self._material = seed
        self._seeded = False
        self.gauss_next = None

    def _ensure_seeded(self) -> None:
        if not self._seeded:
            self.seed(self._material)

    def seed(self, *args: Any, **kwargs: Any) -> None:
        self._seeded = True
        super().seed(*args, **kwargs)

    def random(self) -> float:
        self._ensure_seeded()
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        self._ensure_seeded()
        return super().getrandbits(k)


def request_rng(request: Request, hop: int = 0) -> random.Random:
    """Per-request randomness: the same request and hop decide the same way when redone."""
    return LazyRandom(f"{request.id}/{hop}")


def best(history: list[HistoryEntry]) -> HistoryEntry | None:
    """The most confident answer seen; later (larger) tiers win ties."""
    if not history:
        return None
    return max(reversed(history), key=lambda entry: entry.confidence)


CARRIED = ("explored", "propensities", "canary", "shadow")
"""What a request's tasks record from routing on, and its Result keeps (same names on both)."""


def carried(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name) for name in CARRIED}


def final_result(
    task: Task,
    status: Status,
    answer: Answer | None,
    reason: str | None,
    now: float,
    policy_version: int | None = None,
    deliver: str = "",
    decision: Decision | None = None,
) -> Result:
    """The Result of a request that ends now; ``answer`` is the latest, if any.

    ``policy_version`` is the version that decided it (default: the one the task was routed with).
    ``deliver`` names the tier whose answer an accepting policy chose, when not the latest.
    ``decision``: the one that ended it (the verifier's), after the task's own ``why``.

    Without an accepted answer the best valid answer seen (highest confidence)
    is delivered, so ``exhausted`` and ``expired`` still carry an output.
    """
    history: list[HistoryEntry] = list(task.history)
    if answer is not None:
        history.append(answer.as_history())
    chosen: HistoryEntry | None
    if status is Status.OK and answer is not None:
        chosen = next((e for e in history if e.tier == deliver), history[-1]) if deliver else history[-1]
    else:
        chosen = best(history)
    return Result(
        request_id=task.request.id,
        status=status,
        output=chosen.output if chosen else "",
        tier=chosen.tier if chosen else "",
        model=chosen.model if chosen else "",
        confidence=chosen.confidence if chosen else 0.0,
        total_cost=sum(entry.cost for entry in history),
        latency_ms=max(0.0, (now - task.request.created_at) * 1000),
        path=tuple(entry.tier for entry in history),
        policy_version=task.policy_version if policy_version is None else policy_version,
        reason=reason,
        completed_at=now,
        why=task.why if decision is None else (*task.why, decision),
        **carried(task),
    )


@dataclass(frozen=True, slots=True)
class Routed:
    """The router's outcome: a first task, or (``task.tier == ""``) a request that ends here."""

    task: Task
    status: Status | None = None
    reason: str = ""


def route_request(
    request: Request,
    policy: PreCallPolicy,
    tiers: tuple[TierInfo, ...],
    version: int,
    features: FloatVector | None = None,
) -> Routed:
    """The first task of ``request`` (``features``: its query vector, for policies that read one)."""
    route = policy.route(request, tiers, request_rng(request), features)
    action = "reject" if route.start is None else "start"
    why = (Decision("route", policy.name, action, route.start or "", reason=route.reason),)
    if route.start is None:
        return Routed(Task(request=request, tier="", policy_version=version, why=why), Status.REJECTED, route.reason)
    first = Task(
        request=request,
        tier=route.start,
        allowed=route.allowed,
        policy_version=version,
        estimates=dict(route.estimates),
        why=why,
    )
    return Routed(first)


@dataclass(frozen=True, slots=True)
class Verified:
    """The verifier's outcome: deliver with ``status``, or escalate with ``escalation``."""

    status: Status | None
    reason: str | None = None
    escalation: Task | None = None
    deliver: str = ""
    """With ``Status.OK``: the tier whose answer is delivered ("" for the latest)."""
    decision: Decision | None = None
    """What was decided of the answer (the escalated task carries it in its ``why`` already)."""


def verify_answer(
    answer: Answer,
    policy: PostHocPolicy,
    tiers: tuple[TierInfo, ...],
    now: float,
    max_hops: int,
    expired: bool,
    policy_version: int | None = None,
) -> Verified:
    """Accept, deliver as expired or exhausted, or build the escalated task (stamped with
    ``policy_version``, the version deciding now, when given).

    ``max_hops`` is the deployment's hop limit (``DEFAULT_MAX_HOPS`` unless configured): a
    request makes at most ``max_hops`` tier calls, and an escalation past them ends it as
    ``exhausted`` instead. This is the only place the limit is applied, for every policy,
    in the stream and in the lab alike.
    """
    task = answer.task
    verdict = policy.decide(answer, tiers, now, request_rng(task.request, task.hop))

    def decided(action: str, reason: str) -> Decision:
        return Decision("verify", policy.name, action, answer.tier, answer.confidence, reason)

    if verdict.action is VerdictAction.ACCEPT:
        return Verified(Status.OK, deliver=verdict.deliver, decision=decided("accept", verdict.reason))
    if expired:
        return Verified(Status.EXPIRED, "deadline passed", decision=decided("expired", verdict.reason))
    target = verdict.target
    allowed = task.allowed or tuple(tier.name for tier in tiers)
    if verdict.action is VerdictAction.STOP or target is None or target not in allowed:
        return Verified(Status.EXHAUSTED, verdict.reason, decision=decided("stop", verdict.reason))
    if task.hop + 1 >= max_hops:
        limit = f"hop limit {max_hops} reached"
        return Verified(Status.EXHAUSTED, limit, decision=decided("exhausted", f"{verdict.reason}; {limit}"))
    decision = decided("escalate", f"{verdict.reason}; to {target}" if verdict.reason else f"to {target}")
    escalation = Task(
        request=task.request,
        tier=target,
        hop=task.hop + 1,
        history=(*task.history, answer.as_history()),
        policy_version=task.policy_version if policy_version is None else policy_version,
        source_answer=answer.answer_id,
        allowed=task.allowed,
        estimates=task.estimates if verdict.estimates is None else dict(verdict.estimates),
        why=(*task.why, decision),
        **carried(task),
    )
    return Verified(None, escalation=escalation, decision=decision)
