"""Router stage: applies the pre-call policy and sends each request to its start tier."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import PreCallPolicy, TierInfo
from policies.features import FloatVector
from topics.messages import Request, Status, Task
from workers.context import StageContext
from workers.decisions import route_request
from workers.policy_feed import FollowsPolicy, PolicyFeed
from workers.query_features import QueryFeaturizer
from workers.stage import Inbound, Outbound


class Router(FollowsPolicy[Request]):
    stage = "router"

    def __init__(self, context: StageContext, policy: PreCallPolicy, feed: PolicyFeed | None = None) -> None:
        self.context = context
        self.policy = policy
        self.feed = feed
        self.featurizer = QueryFeaturizer() if policy.needs_features else None

    def topics(self) -> list[str]:
        return [self.context.layout.requests]

    def decode(self, raw: bytes) -> Request:
        return Request.from_wire(raw, self.context.config.limits.max_payload_bytes)

    async def process(self, batch: Sequence[Inbound[Request]]) -> list[Outbound]:
        update = self.feed.current if self.feed is not None else None
        version, tiers = (0, self.context.tiers) if update is None else (update.version, self.context.allowed(update))
        vectors: Sequence[FloatVector | None] = [None] * len(batch)
        if self.featurizer is not None:
            vectors = await self.featurizer.vectors_async([(i.message.id, i.message.input) for i in batch])
        return [self._route(inbound, tiers, version, v) for inbound, v in zip(batch, vectors, strict=True)]

    def _route(
        self, inbound: Inbound[Request], tiers: tuple[TierInfo, ...], version: int, features: FloatVector | None
    ) -> Outbound:
        ctx = self.context
        request = ctx.with_deadline(inbound.message)
        task = Task(request=request, tier="", policy_version=version)
        if ctx.expired(request):
            return ctx.result(inbound, ctx.final(task, Status.EXPIRED, reason="deadline passed before routing"))
        routed = route_request(request, self.policy, tiers, version, features)
        if routed.status is not None:
            return ctx.result(inbound, ctx.final(routed.task, routed.status, reason=routed.reason))
        return Outbound(ctx.layout.tier(routed.task.tier), request.id, routed.task.to_wire(), inbound.headers)
