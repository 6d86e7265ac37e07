"""Router stage: applies the pre-call policy and sends each request to its start tier.

Policies that read the query vector get it from a ``QueryFeaturizer`` of the embedding
they were fitted on (one call per batch). A policy with a ``live_window`` has its threshold re-calibrated on
the scores of the requests this replica routed last, so the share it sends up holds
when live traffic differs from the train split.

With ``[exploration]`` configured, every task records its propensities and a drawn share
of requests is also sent, as exploration copies, to every other allowed tier
(``policies/exploration.py``); the share is the controller's bounded one when it has
published one, else the configured one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from policies.base import PreCallPolicy, TierInfo
from policies.decisions import route_request
from policies.exploration import explore
from policies.features import FloatVector, strip_prefix
from policies.routers import share_threshold
from topics.messages import Request, Status, Task
from workers.context import StageContext
from workers.policy_feed import FollowsPolicy, PolicyFeed
from workers.query_features import QueryFeaturizer
from workers.stage import Inbound, Outbound


class Router(FollowsPolicy[Request]):
    stage = "router"

    def __init__(self, context: StageContext, policy: PreCallPolicy, feed: PolicyFeed | None = None) -> None:
        self.context = context
        self.policy = policy
        self.feed = feed
        self.featurizer = QueryFeaturizer(policy.embedding) if policy.needs_features else None
        self.live = LiveShare(policy.live_window) if policy.live_window else None

    def topics(self) -> list[str]:
        return [self.context.layout.requests]

    def decode(self, raw: bytes) -> Request:
        return Request.from_wire(raw, self.context.deployment.limits.max_payload_bytes)

    async def process(self, batch: Sequence[Inbound[Request]]) -> list[Outbound]:
        update = self.feed.current if self.feed is not None else None
        version, tiers = (0, self.context.tiers) if update is None else (update.version, self.context.allowed(update))
        exploring = self.context.deployment.exploration
        share = update.explore_share if update is not None and update.explore_share is not None else exploring.share
        policy = self.policy
        vectors: Sequence[FloatVector | None] = [None] * len(batch)
        if self.featurizer is not None:
            prefix = policy.query_prefix  # stripped as the lab stripped it when the router was fitted
            embedded = await self.featurizer.vectors_async(
                [(i.message.id, strip_prefix(i.message.input, prefix)) for i in batch]
            )
            policy = self.live.update(policy, embedded) if self.live is not None else policy
            vectors = embedded
        explore_at = share if exploring.enabled else None
        routed = (
            self._route(policy, inbound, tiers, version, v, explore_at)
            for inbound, v in zip(batch, vectors, strict=True)
        )
        return [out for outs in routed for out in outs]

    def _route(
        self,
        policy: PreCallPolicy,
        inbound: Inbound[Request],
        tiers: tuple[TierInfo, ...],
        version: int,
        features: FloatVector | None,
        explore_share: float | None,
    ) -> list[Outbound]:
        """The request's first task (and its exploration copies, when drawn), or its final result."""
        ctx = self.context
        request = ctx.with_deadline(inbound.message)
        task = Task(request=request, tier="", policy_version=version)
        if ctx.expired(request):
            return [ctx.result(inbound, ctx.final(task, Status.EXPIRED, reason="deadline passed before routing"))]
        routed = route_request(request, policy, tiers, version, features)
        if routed.status is not None:
            return [ctx.result(inbound, ctx.final(routed.task, routed.status, reason=routed.reason))]
        first: Task = routed.task
        copies: tuple[Task, ...] = ()
        if explore_share is not None:
            names = [tier.name for tier in tiers]
            first, copies = explore(first, names, explore_share, ctx.deployment.exploration.salt)
        return [
            Outbound(ctx.layout.tier(t.tier), request.id, t.to_wire(), inbound.headers, message=t)
            for t in (first, *copies)
        ]


class LiveShare:
    """The share scores of the last ``window`` requests, and the policy re-calibrated on them."""

    MIN_SCORES = 100
    """Below this many scores (or a full window, if smaller) the fitted threshold stands."""

    def __init__(self, window: int) -> None:
        self.scores: deque[float] = deque(maxlen=window)

    def update(self, policy: PreCallPolicy, vectors: Sequence[FloatVector]) -> PreCallPolicy:
        self.scores.extend(policy.share_score(v) for v in vectors)
        if len(self.scores) < min(self.MIN_SCORES, self.scores.maxlen or 1):
            return policy
        return policy.with_share_threshold(share_threshold(list(self.scores), policy.target_share))
