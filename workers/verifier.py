"""Verifier stage: applies the post-hoc policy to every answer — accept, escalate or stop (``decisions``).

With a policy feed it applies the newest PolicyUpdate: the controller's thresholds
replace the policy's own (for policies with steerable thresholds) and paused tiers
are skipped when escalating. Every escalation and result records the version.

A pushed policy (``topics/rollout.py``) judges the answers of the requests it decides (all
when live, its canary's); in shadow its verdict on every answer is recorded in ``shadow``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from policies.base import PostHocPolicy, TierInfo
from policies.decisions import final_result, verify_answer
from topics.control import PolicyUpdate
from topics.messages import Answer, Task
from topics.rollout import Rollout, RolloutMode
from workers.context import StageContext
from workers.policy_feed import FollowsPolicy, PolicyFeed
from workers.rollout import rollout_policies, shadowed
from workers.stage import Inbound, Outbound


@dataclass(frozen=True, slots=True)
class Applied:
    """What one policy version makes this verifier do: built once per version."""

    version: int
    own: PostHocPolicy
    """The deployment's own policy, with the update's thresholds where it has steerable ones."""
    allowed: tuple[TierInfo, ...]
    rollout: Rollout | None = None
    pushed: PostHocPolicy | None = None
    """The rollout's policy: steered like ``own`` when live (the controller steers what runs),
    with its own fitted parameters as a canary or in shadow."""

    def deciding(self, task: Task) -> PostHocPolicy:
        mode = self.rollout.mode if self.rollout is not None else None
        if self.pushed is not None and (mode is RolloutMode.LIVE or (mode is RolloutMode.CANARY and task.canary)):
            return self.pushed
        return self.own


class Verifier(FollowsPolicy[Answer]):
    stage = "verifier"

    def __init__(self, context: StageContext, policy: PostHocPolicy, feed: PolicyFeed | None = None) -> None:
        self.context = context
        self.base_policy = policy
        self.feed = feed
        self._applied = Applied(0, policy, context.tiers)

    def topics(self) -> list[str]:
        return [self.context.layout.answers]

    def decode(self, raw: bytes) -> Answer:
        answer = Answer.from_wire(raw, self.context.deployment.limits.max_payload_bytes)
        self.context.require_tier(answer.tier)
        return answer

    def _current(self) -> Applied:
        """The policies of the newest update, built once per version."""
        update = self.feed.current if self.feed is not None else None
        if update is not None and update.version != self._applied.version:
            rollout, pushed = update.rollout, None
            if rollout is not None:
                pushed = rollout_policies(rollout)[1]
                pushed = self._steered(pushed, update) if rollout.mode is RolloutMode.LIVE else pushed
            own = self._steered(self.base_policy, update)
            self._applied = Applied(update.version, own, self.context.allowed(update), rollout, pushed)
        return self._applied

    def _steered(self, policy: PostHocPolicy, update: PolicyUpdate) -> PostHocPolicy:
        tiers = self.context.layout.tiers
        if not update.thresholds or policy.steerable_thresholds(tiers) is None:
            return policy
        return policy.with_thresholds(update.thresholds)

    async def process(self, batch: Sequence[Inbound[Answer]]) -> list[Outbound]:
        applied = self._current()
        return [self._verify(inbound, applied) for inbound in batch]

    def _verify(self, inbound: Inbound[Answer], applied: Applied) -> Outbound:
        ctx, answer = self.context, inbound.message
        task, version, allowed = answer.task, applied.version, applied.allowed
        now = ctx.clock()
        # A paused tier is skipped when escalating; the answering tier stays, so "next tier up" is defined.
        tiers = allowed if any(t.name == answer.tier for t in allowed) else ctx.tiers_with(allowed, answer.tier)
        expired = ctx.expired(task.request)
        max_hops = ctx.deployment.limits.max_hops
        step = verify_answer(answer, applied.deciding(task), tiers, now, max_hops, expired, version or None)
        shadow = task.shadow
        if applied.pushed is not None and shadowed(applied.rollout):
            would = verify_answer(answer, applied.pushed, tiers, now, max_hops, expired, version or None).decision
            shadow = (*shadow, would) if would is not None else shadow
        if step.escalation is not None:
            escalation = msgspec.structs.replace(step.escalation, shadow=shadow)
            target = escalation.tier
            return Outbound(
                ctx.layout.escalate(target), task.request.id, escalation.to_wire(), inbound.headers, message=escalation
            )
        assert step.status is not None
        result = final_result(task, step.status, answer, step.reason, now, version or None, step.deliver, step.decision)
        return ctx.result(inbound, msgspec.structs.replace(result, shadow=shadow))
