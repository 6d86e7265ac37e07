"""Verifier stage: applies the post-hoc policy to every answer — accept, escalate or stop (``decisions``).

With a policy feed it applies the newest PolicyUpdate: the controller's thresholds
replace the policy's own (for policies with steerable thresholds) and paused tiers
are skipped when escalating. Every escalation and result records the version.

A policy pushed live (``topics/rollout.py``) replaces the config's own from the version that
carries it on: the answers of a request routed before are judged by it too (one boundary for
every decision, not per request). A canary judges the answers of the requests the router
marked; a shadow's verdict on every answer is recorded in ``shadow``.
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
from workers.rollout import shadowed
from workers.stage import Inbound, Outbound


@dataclass(frozen=True, slots=True)
class Applied:
    """What one policy version makes this verifier do: built once per version."""

    version: int
    own: PostHocPolicy
    """The policy that runs live (the config's own or a pushed one), with the update's thresholds
    where it has steerable ones: the controller steers what runs."""
    allowed: tuple[TierInfo, ...]
    rollout: Rollout | None = None
    pushed: PostHocPolicy | None = None
    """A candidate's policy (canary or shadow), with its own fitted parameters."""

    def deciding(self, task: Task) -> PostHocPolicy:
        """A canary's requests (the router marked them) by the candidate, the rest by the live policy."""
        canary = self.rollout is not None and self.rollout.mode is RolloutMode.CANARY
        return self.pushed if self.pushed is not None and canary and task.canary else self.own


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
        """The policies of the newest update, built once per version: the one that runs live (the
        config's own or a pushed one, steered by the update's thresholds) and a candidate beside it."""
        update = self.feed.current if self.feed is not None else None
        if self.feed is not None and update is not None and update.version != self._applied.version:
            texts = self.feed.texts
            live = self.base_policy if update.live_policy is None else texts.policies(update.live_policy)[1]
            rollout = update.rollout
            pushed = texts.policies(rollout)[1] if rollout is not None else None
            own = self._steered(live, update)
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
