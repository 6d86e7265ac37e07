"""Verifier stage: applies the post-hoc policy to every answer — accept, escalate or stop."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import Action, PostHocPolicy
from topics.messages import Answer, Status, Task
from workers.context import StageContext
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
        verdict = self.policy.decide(answer, ctx.tiers, ctx.clock(), ctx.rng(task.request, task.hop))
        if verdict.action is Action.ACCEPT:
            return ctx.result(inbound, ctx.final(task, Status.OK, answer))
        if ctx.expired(task.request):
            return ctx.result(inbound, ctx.final(task, Status.EXPIRED, answer, reason="deadline passed"))
        target = verdict.target
        allowed = task.allowed or ctx.layout.tiers
        if verdict.action is Action.STOP or target is None or target not in allowed:
            return ctx.result(inbound, ctx.final(task, Status.EXHAUSTED, answer, reason=verdict.reason))
        if task.hop + 1 >= ctx.config.limits.max_hops:
            reason = f"hop limit {ctx.config.limits.max_hops} reached"
            return ctx.result(inbound, ctx.final(task, Status.EXHAUSTED, answer, reason=reason))
        escalation = Task(
            request=task.request,
            tier=target,
            hop=task.hop + 1,
            history=(*task.history, answer.as_history()),
            policy_version=task.policy_version,
            source_answer=answer.answer_id,
            allowed=task.allowed,
        )
        return Outbound(ctx.layout.escalate(target), task.request.id, escalation.to_wire(), inbound.headers)
