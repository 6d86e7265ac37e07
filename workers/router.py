"""Router stage: applies the pre-call policy and sends each request to its start tier."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import PreCallPolicy
from topics.messages import Request, Status, Task
from workers.context import StageContext
from workers.stage import Handler, Inbound, Outbound


class Router(Handler[Request]):
    stage = "router"

    def __init__(self, context: StageContext, policy: PreCallPolicy, policy_version: int = 0) -> None:
        self.context = context
        self.policy = policy
        self.policy_version = policy_version

    def topics(self) -> list[str]:
        return [self.context.layout.requests]

    def decode(self, raw: bytes) -> Request:
        return Request.from_wire(raw, self.context.config.limits.max_payload_bytes)

    async def process(self, batch: Sequence[Inbound[Request]]) -> list[Outbound]:
        return [self._route(inbound) for inbound in batch]

    def _route(self, inbound: Inbound[Request]) -> Outbound:
        ctx = self.context
        request = ctx.with_deadline(inbound.message)
        task = Task(request=request, tier="", policy_version=self.policy_version)
        if ctx.expired(request):
            return ctx.result(inbound, ctx.final(task, Status.EXPIRED, reason="deadline passed before routing"))
        route = self.policy.route(request, ctx.tiers, ctx.rng(request))
        if route.start is None:
            return ctx.result(inbound, ctx.final(task, Status.REJECTED, reason=route.reason))
        task = Task(request=request, tier=route.start, allowed=route.allowed, policy_version=self.policy_version)
        return Outbound(ctx.layout.tier(route.start), request.id, task.to_wire(), inbound.headers)
