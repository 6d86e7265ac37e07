"""Verifier stage: applies the post-hoc policy to every answer — accept, escalate or stop (``decisions``).

With a policy feed it applies the newest PolicyUpdate: the controller's thresholds
replace the policy's own (for policies with steerable thresholds) and paused tiers
are skipped when escalating. Every escalation and result records the version.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import PostHocPolicy, TierInfo
from policies.decisions import final_result, verify_answer
from topics.control import PolicyUpdate
from topics.messages import Answer
from workers.context import StageContext
from workers.policy_feed import FollowsPolicy, PolicyFeed
from workers.stage import Inbound, Outbound


class Verifier(FollowsPolicy[Answer]):
    stage = "verifier"

    def __init__(self, context: StageContext, policy: PostHocPolicy, feed: PolicyFeed | None = None) -> None:
        self.context = context
        self.base_policy = policy
        self.feed = feed
        self._applied: tuple[int, PostHocPolicy, tuple[TierInfo, ...]] = (0, policy, context.tiers)

    def topics(self) -> list[str]:
        return [self.context.layout.answers]

    def decode(self, raw: bytes) -> Answer:
        answer = Answer.from_wire(raw, self.context.deployment.limits.max_payload_bytes)
        self.context.require_tier(answer.tier)
        return answer

    def _current(self) -> tuple[int, PostHocPolicy, tuple[TierInfo, ...]]:
        """The policy of the newest update, built once per version."""
        update = self.feed.current if self.feed is not None else None
        if update is not None and update.version != self._applied[0]:
            self._applied = (update.version, self._steered(update), self.context.allowed(update))
        return self._applied

    def _steered(self, update: PolicyUpdate) -> PostHocPolicy:
        tiers = self.context.layout.tiers
        if not update.thresholds or self.base_policy.steerable_thresholds(tiers) is None:
            return self.base_policy
        return self.base_policy.with_thresholds(update.thresholds)

    async def process(self, batch: Sequence[Inbound[Answer]]) -> list[Outbound]:
        version, policy, allowed = self._current()
        return [self._verify(inbound, version, policy, allowed) for inbound in batch]

    def _verify(
        self, inbound: Inbound[Answer], version: int, policy: PostHocPolicy, allowed: tuple[TierInfo, ...]
    ) -> Outbound:
        ctx, answer = self.context, inbound.message
        task = answer.task
        now = ctx.clock()
        # A paused tier is skipped when escalating; the answering tier stays, so "next tier up" is defined.
        tiers = allowed if any(t.name == answer.tier for t in allowed) else ctx.tiers_with(allowed, answer.tier)
        expired = ctx.expired(task.request)
        step = verify_answer(answer, policy, tiers, now, ctx.deployment.limits.max_hops, expired, version or None)
        if step.escalation is not None:
            target = step.escalation.tier
            return Outbound(
                ctx.layout.escalate(target),
                task.request.id,
                step.escalation.to_wire(),
                inbound.headers,
                message=step.escalation,
            )
        assert step.status is not None
        result = final_result(task, step.status, answer, step.reason, now, version or None, step.deliver, step.decision)
        return ctx.result(inbound, result)
