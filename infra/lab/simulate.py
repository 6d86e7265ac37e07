"""Run policies over a trace with the stream's own decision code.

Each item becomes a Request; the router's ``route_request`` picks the start tier
(reading the same query vector the router computes, for policies that read one),
each tier "answers" with its recorded row (through the model worker's
``to_answer``), and the verifier's ``verify_answer`` accepts, escalates or stops —
the very functions the stages call. What ``tierflow eval`` reports is therefore
what the pipeline would do with the same trace and policy file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.lab.features import query_vectors
from infra.lab.table import TraceTable
from policies.base import PostHocPolicy, PreCallPolicy
from policies.decisions import final_result, hop_limit, route_request, verify_answer
from topics.messages import Request, Status
from workers.backends.replay import completion_from_row
from workers.model_worker import to_answer


@dataclass(frozen=True, slots=True)
class Outcome:
    item: str
    status: Status
    path: tuple[str, ...]
    tier: str
    """The tier whose answer was delivered ("" when none)."""
    output: str
    correct: bool
    cost: float


@dataclass(frozen=True, slots=True)
class Summary:
    accuracy: float
    cost: float
    """Mean cost per request."""
    calls: float
    """Mean tiers called per request."""


def simulate(
    table: TraceTable, pre: PreCallPolicy, post: PostHocPolicy, max_hops: int | None = None
) -> list[Outcome]:
    """Every item of ``table`` through the stream's own decision functions; ``max_hops`` defaults to
    the portfolio's (:func:`~policies.decisions.hop_limit`), so no cascade stops short of its last tier."""
    max_hops = max_hops or hop_limit(len(table.tiers))
    tiers = table.tier_infos()
    index = {name: t for t, name in enumerate(table.tiers)}
    vectors = query_vectors(table, pre.embedding, prefix=pre.query_prefix) if pre.needs_features else None
    outcomes = []
    for i, (item, rows) in enumerate(zip(table.items, table.rows, strict=True)):
        request = Request(id=item, input=rows[0].input, created_at=0.0)
        routed = route_request(request, pre, tiers, 0, None if vectors is None else vectors[i])
        if routed.status is not None:
            outcomes.append(Outcome(item, routed.status, (), "", "", False, 0.0))
            continue
        task = routed.task
        while True:
            row = rows[index[task.tier]]
            answer = to_answer(task, row.model, completion_from_row(row))
            step = verify_answer(answer, post, tiers, 0.0, max_hops, expired=False)
            if step.escalation is None:
                break
            task = step.escalation
        assert step.status is not None
        result = final_result(task, step.status, answer, step.reason, 0.0, deliver=step.deliver, decision=step.decision)
        correct = bool(result.tier) and rows[index[result.tier]].correct
        delivered = Outcome(item, result.status, result.path, result.tier, result.output, correct, result.total_cost)
        outcomes.append(delivered)
    return outcomes


def summarise(outcomes: list[Outcome]) -> Summary:
    return Summary(
        accuracy=float(np.mean([o.correct for o in outcomes])),
        cost=float(np.mean([o.cost for o in outcomes])),
        calls=float(np.mean([len(o.path) for o in outcomes])),
    )
