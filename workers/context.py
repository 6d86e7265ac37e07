"""What every stage of one deployment shares: config, topic layout, tier table, clock."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec

from infra.config import Config
from policies.base import TierInfo
from topics.errors import DecodeError
from topics.messages import Answer, HistoryEntry, Request, Result, Status, Task
from topics.names import TopicLayout
from workers.stage import Inbound, Outbound


@dataclass(frozen=True)
class StageContext:
    """Read-only, computed once per replica: the hot path asks for the layout on every record."""

    config: Config
    clock: Callable[[], float] = field(default=time.time)

    @cached_property
    def layout(self) -> TopicLayout:
        return self.config.layout

    @cached_property
    def tiers(self) -> tuple[TierInfo, ...]:
        return tuple(TierInfo(tier.name, tier.cost) for tier in self.config.tiers)

    def require_tier(self, name: str) -> None:
        if name not in self.layout.tiers:
            raise DecodeError("unknown_tier", f"tier {name!r} is not configured ({', '.join(self.layout.tiers)})")

    def rng(self, request: Request, hop: int = 0) -> random.Random:
        """Per-request randomness: the same request and hop decide the same way when redone."""
        return random.Random(f"{request.id}/{hop}")

    def with_deadline(self, request: Request) -> Request:
        if request.deadline is not None:
            return request
        return msgspec.structs.replace(request, deadline=request.created_at + self.config.limits.default_deadline_s)

    def expired(self, request: Request) -> bool:
        return request.deadline is not None and self.clock() > request.deadline

    def result(self, inbound: Inbound[Any], result: Result) -> Outbound:
        return Outbound(self.layout.results, result.request_id, result.to_wire(), inbound.headers)

    def final(
        self,
        task: Task,
        status: Status,
        answer: Answer | None = None,
        reason: str | None = None,
    ) -> Result:
        """The Result of a request that ends now; ``answer`` is the latest, if any.

        Without an accepted answer the best valid answer seen (highest confidence)
        is delivered, so ``exhausted`` and ``expired`` still carry an output.
        """
        history: list[HistoryEntry] = list(task.history)
        if answer is not None:
            history.append(answer.as_history())
        chosen = answer.as_history() if status is Status.OK and answer is not None else best(history)
        return Result(
            request_id=task.request.id,
            status=status,
            output=chosen.output if chosen else "",
            tier=chosen.tier if chosen else "",
            model=chosen.model if chosen else "",
            confidence=chosen.confidence if chosen else 0.0,
            total_cost=sum(entry.cost for entry in history),
            latency_ms=max(0.0, (self.clock() - task.request.created_at) * 1000),
            path=tuple(entry.tier for entry in history),
            policy_version=task.policy_version,
            reason=reason,
            completed_at=self.clock(),
        )


def best(history: list[HistoryEntry]) -> HistoryEntry | None:
    """The most confident answer seen; later (larger) tiers win ties."""
    if not history:
        return None
    return max(reversed(history), key=lambda entry: entry.confidence)
