"""Verifier stage: applies the post-hoc policy to every answer — accept, escalate or stop (``decisions``)."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import PostHocPolicy
from topics.messages import Answer
from workers.context import StageContext
from workers.decisions import final_result, verify_answer
from workers.stage import Handler, Inbound, Outbound


class Verifier(Handler[Answer]):
    stage = "verifier"

    def __init__(self, context: StageContext, policy: PostHocPolicy) -> None:
        self.context = context
        self.policy = policy

    def topics(self) -> list[str]:
        return [self.context.layout.answers]

    def decode(self, raw: bytes) -> Answer:
        answer = Answer.from_wire(raw, self.context.config.limits.max_payload_bytes)
        self.context.require_tier(answer.tier)
        return answer

    async def process(self, batch: Sequence[Inbound[Answer]]) -> list[Outbound]:
        return [self._verify(inbound) for inbound in batch]

    def _verify(self, inbound: Inbound[Answer]) -> Outbound:
        ctx, answer = self.context, inbound.message
        task = answer.task
        limits = ctx.config.limits
        now = ctx.clock()
        step = verify_answer(answer, self.policy, ctx.tiers, now, limits.max_hops, ctx.expired(task.request))
        if step.escalation is not None:
            target = step.escalation.tier
            return Outbound(ctx.layout.escalate(target), task.request.id, step.escalation.to_wire(), inbound.headers)
        assert step.status is not None
        return ctx.result(inbound, final_result(task, step.status, answer, step.reason, now))
