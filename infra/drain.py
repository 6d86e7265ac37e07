"""Stop without dropping: let the stages finish what an embedded broker holds before it goes.

The embedded broker keeps every record in memory, so stopping it forgets every request
still on its way through the stages. On Ctrl-C or SIGTERM, ``tierflow up`` therefore keeps
the stages running until nothing is left to do — or until ``[broker] drain_s`` has passed
— and then says how many requests it could not finish.

"Nothing left" is read two ways: the lag (high watermark minus committed offset, summed
over every stage's group, as ``tierflow status`` shows it) must be zero, *and* the
replicas must have consumed nothing new between two such readings (a replica may hold a
fetched batch it has not committed yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from topics.errors import TierflowError

SINK_POOL = "sink"
"""The pool whose lag is results not yet written, not requests unfinished."""
DRAIN_CHECK_S = 0.5
"""How often the lag is read while draining."""
QUIET_CHECKS = 2
"""Readings in a row, after the first, with no lag and nothing newly consumed, that count as drained."""


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What a drain reached: everything done, or what was left when it ended."""

    drained: bool
    waited_s: float
    unfinished: dict[str, int] = field(default_factory=dict)
    """Records still waiting for a stage, by pool (router, ``worker.<tier>``, verifier): each is a
    request that has no result yet."""
    unwritten: int = 0
    """Results the sink had not yet written to its file."""
    interrupted: bool = False
    """Ended by a second Ctrl-C or SIGTERM rather than by finishing or by the bound."""
    error: str = ""
    """Why the offsets could not be read, when that ended the drain (the broker went away)."""

    @property
    def requests_unfinished(self) -> int:
        return sum(self.unfinished.values())

    def summary(self, bound_name: str = "broker.drain_s") -> str:
        """One line for the operator: drained, or what is lost when the broker stops."""
        if self.drained:
            return f"drained in {self.waited_s:.1f} s: every request the broker held has its result"
        if self.error:
            return f"stopped draining after {self.waited_s:.1f} s: {self.error}"
        why = "interrupted" if self.interrupted else f"{bound_name} reached"
        where = ", ".join(f"{pool} {count:,}" for pool, count in sorted(self.unfinished.items()) if count)
        left = f"{self.requests_unfinished:,} requests unfinished" + (f" ({where})" if where else "")
        if self.unwritten:
            left += f", {self.unwritten:,} results not written by the sink"
        return f"stopped draining after {self.waited_s:.1f} s ({why}): {left}"


def split_lag(lag: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """Lag per pool as (requests unfinished by pool, results unwritten by the sink)."""
    unfinished = {pool: count for pool, count in lag.items() if pool != SINK_POOL}
    return unfinished, lag.get(SINK_POOL, 0)


async def drain(
    read_lag: Callable[[], Awaitable[Mapping[str, int]]],
    consumed: Callable[[], Awaitable[int]],
    timeout_s: float,
    *,
    stop_now: asyncio.Event,
    on_progress: Callable[[float, Mapping[str, int]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    every_s: float = DRAIN_CHECK_S,
) -> DrainResult:
    """Wait until the stages have nothing left, ``timeout_s`` passed, or ``stop_now`` is set.

    ``read_lag`` returns the lag per stage pool; ``consumed`` the records all replicas have
    consumed so far (any change means work is still moving). ``on_progress`` gets the seconds
    waited and the lag at every reading. A lag that cannot be read (the broker went away)
    ends the drain: there is nothing left to finish on a broker that cannot be reached.
    """
    started = clock()
    quiet, last_consumed = 0, -1
    lag: Mapping[str, int] = {}
    while True:
        try:
            lag = await read_lag()
        except TierflowError as exc:
            return DrainResult(False, clock() - started, error=f"cannot read what is left ({exc})")
        now_consumed = await consumed()
        waited = clock() - started
        if on_progress is not None:
            on_progress(waited, lag)
        quiet = quiet + 1 if not any(lag.values()) and now_consumed == last_consumed else 0
        last_consumed = now_consumed
        if quiet >= QUIET_CHECKS:
            return DrainResult(drained=True, waited_s=waited)
        if stop_now.is_set() or waited >= timeout_s:
            unfinished, unwritten = split_lag(lag)
            return DrainResult(False, waited, unfinished, unwritten, interrupted=stop_now.is_set())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_now.wait(), timeout=min(every_s, max(0.0, timeout_s - waited)))
