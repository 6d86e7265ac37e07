"""What every stage of one deployment shares: its spec, topic layout, tier table, clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec

from policies.base import TierInfo
from policies.decisions import final_result
from topics.control import PolicyUpdate
from topics.errors import DecodeError
from topics.messages import Answer, Request, Result, Status, Task
from topics.names import TopicLayout
from workers.spec import DeploymentSpec
from workers.stage import Inbound, Outbound


@dataclass(frozen=True)
class StageContext:
    """Read-only, computed once per replica: the hot path asks for the layout on every record."""

    deployment: DeploymentSpec
    clock: Callable[[], float] = field(default=time.time)

    @cached_property
    def layout(self) -> TopicLayout:
        return self.deployment.layout

    @cached_property
    def tiers(self) -> tuple[TierInfo, ...]:
        return tuple(TierInfo(tier.name, tier.cost) for tier in self.deployment.tiers)

    def allowed(self, update: PolicyUpdate) -> tuple[TierInfo, ...]:
        """The tiers a policy update leaves running, in ladder order."""
        running = set(update.allowed_tiers)
        return tuple(tier for tier in self.tiers if tier.name in running)

    def tiers_with(self, allowed: tuple[TierInfo, ...], name: str) -> tuple[TierInfo, ...]:
        """``allowed`` plus tier ``name``, in ladder order."""
        keep = {tier.name for tier in allowed} | {name}
        return tuple(tier for tier in self.tiers if tier.name in keep)

    def require_tier(self, name: str) -> None:
        if name not in self.layout.tiers:
            raise DecodeError("unknown_tier", f"tier {name!r} is not configured ({', '.join(self.layout.tiers)})")

    def with_deadline(self, request: Request) -> Request:
        if request.deadline is not None:
            return request
        return msgspec.structs.replace(request, deadline=request.created_at + self.deployment.limits.default_deadline_s)

    def expired(self, request: Request) -> bool:
        return request.deadline is not None and self.clock() > request.deadline

    def result(self, inbound: Inbound[Any], result: Result) -> Outbound:
        return Outbound(self.layout.results, result.request_id, result.to_wire(), inbound.headers, message=result)

    def final(
        self,
        task: Task,
        status: Status,
        answer: Answer | None = None,
        reason: str | None = None,
    ) -> Result:
        """The Result of a request that ends now (see ``decisions.final_result``)."""
        return final_result(task, status, answer, reason, self.clock())
