"""The run report: what the demo and ``send --wait`` print, and what ``--json`` writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.window import percentile_summary
from topics.messages import Answer, Result, Status


@dataclass(frozen=True)
class RunFacts:
    """Everything a run observed, as plain data."""

    sent: Sequence[str]
    """Request ids sent, in order."""
    results: Mapping[str, Result]
    """The delivered (first) result per request id."""
    answers: Sequence[Answer]
    """Every distinct answer seen on the answers topic."""
    labels: Mapping[str, str]
    """Gold label per request id, where known."""
    dead_letters: int
    dead_ids: set[str]
    """Request ids that ended in the dead-letter topic instead of a result."""
    raw_duplicates: int
    """Results seen more than once on the results topic (repeated hops; the sink delivers each id once)."""
    delivered_duplicates: int
    wall_s: float
    broker_resets: int = 0
    """How often the broker turned out to have lost its data (a restarted memory broker)."""
    resubmitted: int = 0
    """Requests sent again after a broker reset."""


def _accuracy(pairs: Sequence[tuple[str, str]]) -> float | None:
    return round(sum(out == gold for out, gold in pairs) / len(pairs), 4) if pairs else None


def build_report(facts: RunFacts, tier_order: Sequence[str]) -> dict[str, Any]:
    """Per-tier and overall figures; keys are the documented ``--json`` schema."""
    results = [facts.results[i] for i in facts.sent if i in facts.results]
    labelled = [(r.output, facts.labels[r.request_id]) for r in results if r.request_id in facts.labels]
    tiers: dict[str, dict[str, Any]] = {}
    for tier in tier_order:
        answers = [a for a in facts.answers if a.tier == tier]
        gold = [(a.output, facts.labels[a.request_id]) for a in answers if a.request_id in facts.labels]
        tiers[tier] = {
            "answered": len(answers),
            "accepted": sum(1 for r in results if r.status is Status.OK and r.tier == tier),
            "escalated": sum(1 for r in results if tier in r.path[:-1]),
            "accuracy": _accuracy(gold),
            "cost": round(sum(a.cost for a in answers), 6),
        }
    total_cost = sum(r.total_cost for r in results)
    return {
        "requests": len(facts.sent),
        "results": len(results),
        "lost": sum(1 for i in facts.sent if i not in facts.results and i not in facts.dead_ids),
        "duplicates": facts.delivered_duplicates,
        "raw_duplicates": facts.raw_duplicates,
        "dead_letters": facts.dead_letters,
        "broker_resets": facts.broker_resets,
        "resubmitted": facts.resubmitted,
        "status": dict(Counter(r.status.value for r in results)),
        "accuracy": _accuracy(labelled),
        "cost_total": round(total_cost, 6),
        "cost_per_request": round(total_cost / len(results), 8) if results else 0.0,
        "throughput_rps": round(len(results) / facts.wall_s, 2) if facts.wall_s > 0 else 0.0,
        "wall_s": round(facts.wall_s, 2),
        "latency_ms": percentile_summary(r.latency_ms for r in results),
        "mean_hops": round(float(np.mean([len(r.path) for r in results])), 3) if results else 0.0,
        "tiers": tiers,
    }
