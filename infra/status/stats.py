"""The pure half of ``tierflow status``: what one snapshot holds and what it says.

The window's statistics come from :mod:`policies.window` (the same code the budget
controller measures with); this module shapes them into the ``results`` object, does
the lag arithmetic and folds control records into the newest report, update and replies.
Nothing here does I/O, so all of it is tested without a broker.

Only what the controller signed counts: a report, update or reply that is unsigned, signed
by a key id the config does not list, or badly signed is left out and counted in
:attr:`ControlState.unsigned` (anyone who can produce to the topic could have written it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.window import answered_share, answers_per_second, latency_at, percentile_summary, summarize
from topics.control import (
    ControlCommand,
    ControllerReport,
    ControlReply,
    PolicyUpdate,
    PoolReport,
    Targets,
    TrustedKeys,
    decode_control,
    record_kind,
    verify_record,
)
from topics.errors import DecodeError
from topics.messages import Result

REPLIES_SHOWN = 5


def window_stats(results: Sequence[Result], window_s: float, tiers: Sequence[str] = ()) -> dict[str, Any]:
    """The ``results`` object of the JSON from the results of one window (already filtered)."""
    stats = summarize(results, window_s)
    return {
        "count": stats.count,
        "rate": stats.rate,
        "by_status": stats.by_status,
        "latency_ms": percentile_summary(r.latency_ms for r in results),
        "cost_per_request": stats.cost_per_request,
        "cost_per_second": stats.cost_per_second,
        "escalation_rate": stats.escalation_rate,
        "mean_confidence": stats.mean_confidence,
        "answered_share": answered_share(results, tiers),
        "tier_answers_per_s": answers_per_second(results, window_s, tiers),
    }


def partition_lag(end: int, committed: int | None, beginning: int = 0) -> int:
    """Records of one partition its group has not committed (never negative: see the end-offset caveat)."""
    return max(0, end - (beginning if committed is None else committed))


def lag_totals(
    pools: Mapping[str, Sequence[tuple[str, int]]],
    ends: Mapping[tuple[str, int], int],
    committed: Mapping[str, Mapping[tuple[str, int], int | None]],
    beginnings: Mapping[tuple[str, int], int] | None = None,
) -> dict[str, int]:
    """Lag per pool: the sum of :func:`partition_lag` over the (topic, partition) pairs of its topics."""
    starts = beginnings or {}
    return {
        pool: sum(partition_lag(ends[tp], committed[pool].get(tp), starts.get(tp, 0)) for tp in tps)
        for pool, tps in pools.items()
    }


def uncommitted(
    pools: Mapping[str, Sequence[tuple[str, int]]],
    committed: Mapping[str, Mapping[tuple[str, int], int | None]],
    ends: Mapping[tuple[str, int], int],
    beginnings: Mapping[tuple[str, int], int] | None = None,
) -> list[str]:
    """Pools whose group has committed nothing on a partition that holds records."""
    starts = beginnings or {}
    return [
        pool
        for pool, tps in pools.items()
        if any(committed[pool].get(tp) is None and ends[tp] > starts.get(tp, 0) for tp in tps)
    ]


@dataclass
class ControlState:
    """What the control topic says, newest first."""

    report: ControllerReport | None = None
    policy: PolicyUpdate | None = None
    replies: list[tuple[int, ControlReply]] = field(default_factory=list)
    """(offset, reply), newest first, at most :data:`REPLIES_SHOWN`."""
    pools: PoolReport | None = None
    """The supervisor's newest report of its pools (none: no supervisor, e.g. ``tierflow demo``)."""
    undecodable: int = 0
    unsigned: Counter[str] = field(default_factory=Counter)
    """Reports, updates and replies left out because no trusted key signed them, by ``kind:reason``."""

    def complete(self) -> bool:
        """Whether reading further back could change nothing shown."""
        found = self.report is not None and self.policy is not None and self.pools is not None
        return found and len(self.replies) >= REPLIES_SHOWN


def control_state(
    records: Iterable[tuple[int, bytes | None]], state: ControlState | None = None, *, trusted: TrustedKeys
) -> ControlState:
    """Fold (offset, value) records of the control topic into ``state``; records may come in any order,
    but every record passed later must be older than those in ``state`` (the backward walk). Reports,
    updates and replies count only when signed by a key in ``trusted``."""
    state = state or ControlState()
    for offset, value in sorted(records, key=lambda item: -item[0]):
        try:
            message = decode_control(value or b"")
        except DecodeError:
            state.undecodable += 1
            continue
        if isinstance(message, ControlCommand):
            continue
        reason = verify_record(message, trusted)
        if reason is not None:
            state.unsigned[f"{record_kind(message)}:{reason}"] += 1
            continue
        if isinstance(message, ControllerReport) and state.report is None:
            state.report = message
        elif isinstance(message, PolicyUpdate) and state.policy is None:
            state.policy = message
        elif isinstance(message, ControlReply) and len(state.replies) < REPLIES_SHOWN:
            state.replies.append((offset, message))
        elif isinstance(message, PoolReport) and state.pools is None:
            state.pools = message
    return state


def _error_pct(observed: float, target: float) -> float:
    return round((observed - target) / target * 100.0, 2)


def cost_vs_target(targets: Targets, window: Sequence[Result], stats: Mapping[str, Any]) -> dict[str, Any]:
    """Each target the controller holds next to this window's observed value (``stats``: :func:`window_stats`)."""
    out: dict[str, Any] = {}
    observed = {
        "cost_per_request": stats["cost_per_request"],
        "cost_per_second": stats["cost_per_second"],
        "latency_ms": latency_at(window, targets.latency_quantile),
        "quality_floor": stats["mean_confidence"],
    }
    for name, value in observed.items():
        target = getattr(targets, name)
        if target is not None:
            entry = {"target": target, "observed": value, "error_pct": _error_pct(value, target) if target else None}
            if name == "latency_ms":
                entry["quantile"] = targets.latency_quantile
            out[name] = entry
    return out


@dataclass
class Snapshot:
    """Everything one status read found (plain data: the renderers and the JSON need nothing else)."""

    namespace: str
    bootstrap: str
    tiers: tuple[str, ...]
    at: float
    window_s: float
    results: list[Result]
    """Results read from the tail of the results topic (may reach further back than the window)."""
    lag: dict[str, int]
    uncommitted: list[str] = field(default_factory=list)
    control: ControlState = field(default_factory=ControlState)
    undecodable_results: int = 0
    truncated: bool = False
    truncated_at: int = 0
    """The most records one read takes from one results partition (shown when ``truncated``)."""
