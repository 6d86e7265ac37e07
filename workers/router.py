"""Router stage: applies the pre-call policy and sends each request to its start tier.

Policies that read the query vector get it from a ``QueryFeaturizer`` of the embedding
they were fitted on (one call per batch). A policy with a ``live_window`` has its threshold re-calibrated on
the scores of the requests this replica routed last, so the share it sends up holds
when live traffic differs from the train split.

With ``[exploration]`` configured, every task records its propensities and a drawn share
of requests is also sent, as exploration copies, to every other allowed tier
(``policies/exploration.py``); the share is the controller's bounded one when it has
published one, else the configured one.

A policy pushed live with ``tierflow policy push`` (``topics/rollout.py``) replaces the
config's own; a candidate pushed as a canary decides the hashed share of requests it reaches,
and one in shadow decides none: the start it would have chosen is recorded in ``shadow``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import msgspec

from policies.base import PreCallPolicy, TierInfo
from policies.decisions import route_request
from policies.exploration import explore
from policies.features import FloatVector, strip_prefix
from policies.routers import share_threshold
from topics.messages import Decision, Request, Status, Task
from topics.rollout import RolloutMode
from workers.context import StageContext
from workers.policy_feed import FollowsPolicy, PolicyFeed
from workers.query_features import QueryFeaturizer
from workers.rollout import shadowed
from workers.stage import Inbound, Outbound


class Router(FollowsPolicy[Request]):
    stage = "router"

    def __init__(self, context: StageContext, policy: PreCallPolicy, feed: PolicyFeed | None = None) -> None:
        self.context = context
        self.policy = policy
        self.feed = feed
        self.featurizers: dict[tuple[str, str], QueryFeaturizer] = {}
        """One per (embedding, query prefix) a policy of this replica reads (its own, a pushed one)."""
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
        explore_at = share if exploring.enabled else None
        rollout = update.rollout if update is not None else None
        texts = self.feed.texts if self.feed is not None else None
        pushed = texts.policies(rollout)[0] if rollout is not None and texts is not None else None
        decided = [pushed is not None and rollout is not None and rollout.decides(i.message.id) for i in batch]
        live = update.live_policy if update is not None else None
        runs_live = texts.policies(live)[0] if live is not None and texts is not None else self.policy
        own, own_vectors = await self._vectors(runs_live, batch, not all(decided), calibrate=live is None)
        if pushed is not None:
            _, pushed_vectors = await self._vectors(pushed, batch, any(decided) or shadowed(rollout))
        out: list[Outbound] = []
        for i, inbound in enumerate(batch):
            shadow: tuple[Decision, ...] = ()
            if pushed is not None and shadowed(rollout):
                request = self.context.with_deadline(inbound.message)
                shadow = route_request(request, pushed, tiers, version, pushed_vectors[i]).task.why
            if pushed is not None and decided[i]:
                canary = rollout is not None and rollout.mode is RolloutMode.CANARY
                out += self._route(pushed, inbound, tiers, version, pushed_vectors[i], explore_at, canary, shadow)
            else:
                out += self._route(own, inbound, tiers, version, own_vectors[i], explore_at, False, shadow)
        return out

    async def _vectors(
        self, policy: PreCallPolicy, batch: Sequence[Inbound[Request]], needed: bool, calibrate: bool = False
    ) -> tuple[PreCallPolicy, Sequence[FloatVector | None]]:
        """The query vectors ``policy`` reads (one featurizer call per batch; none when it reads none or
        no request of the batch needs it), and the policy re-calibrated on them (``calibrate``: the
        deployment's own policy, whose live window this replica keeps)."""
        if not (needed and policy.needs_features):
            return policy, [None] * len(batch)
        key = (policy.embedding, policy.query_prefix)  # its cache is by request id: one per text it embeds
        featurizer = self.featurizers.get(key)
        if featurizer is None:
            featurizer = self.featurizers[key] = QueryFeaturizer(policy.embedding)
        prefix = policy.query_prefix  # stripped as the lab stripped it when the router was fitted
        queries = [(i.message.id, strip_prefix(i.message.input, prefix)) for i in batch]
        embedded = await featurizer.vectors_async(queries)
        if calibrate and self.live is not None:
            policy = self.live.update(policy, embedded)
        return policy, embedded

    def _route(
        self,
        policy: PreCallPolicy,
        inbound: Inbound[Request],
        tiers: tuple[TierInfo, ...],
        version: int,
        features: FloatVector | None,
        explore_share: float | None,
        canary: bool,
        shadow: tuple[Decision, ...],
    ) -> list[Outbound]:
        """The request's first task (and its exploration copies, when drawn), or its final result."""
        ctx = self.context
        request = ctx.with_deadline(inbound.message)
        task = Task(request=request, tier="", policy_version=version, canary=canary, shadow=shadow)
        if ctx.expired(request):
            return [ctx.result(inbound, ctx.final(task, Status.EXPIRED, reason="deadline passed before routing"))]
        routed = route_request(request, policy, tiers, version, features)
        first: Task = msgspec.structs.replace(routed.task, canary=canary, shadow=shadow)
        if routed.status is not None:
            return [ctx.result(inbound, ctx.final(first, routed.status, reason=routed.reason))]
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
