"""Run policies over a trace with the stream's own decision code.

Each item becomes a Request; the router's ``route_request`` picks the start tier
(reading the same query vector the router computes, for policies that read one),
each tier "answers" with its recorded row (through the model worker's
``to_answer``), and the verifier's ``verify_answer`` accepts, escalates or stops —
the very functions the stages call. What ``tierflow eval`` reports is therefore
what the pipeline would do with the same trace and policy file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infra.lab.features import query_vectors
from infra.lab.table import TraceTable
from policies.base import PostHocPolicy, PreCallPolicy, TierInfo
from policies.decisions import final_result, hop_limit, route_request, verify_answer
from policies.features import FloatVector
from topics.messages import Request, Status
from topics.traces import TraceRow
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


RowOf = Callable[[str], TraceRow | None]
"""A request's recorded row for a tier, or None where that tier did not run on it (a stream trace)."""


@dataclass(frozen=True, slots=True)
class Unobserved:
    """A request whose policy called a tier the trace has no row for: its outcome is unknown."""

    item: str
    path: tuple[str, ...]
    """The tiers called before the missing one (their rows are present)."""
    missing: str


def run_request(
    item: str,
    text: str,
    row_of: RowOf,
    pre: PreCallPolicy,
    post: PostHocPolicy,
    tiers: tuple[TierInfo, ...],
    max_hops: int,
    vector: FloatVector | None = None,
) -> Outcome | Unobserved:
    """One request through the stream's decision functions, each tier answering with ``row_of(tier)``.

    The one per-request loop of the lab: :func:`simulate` runs it on items every tier answered, and
    the off-policy estimates (:mod:`infra.lab.offpolicy`) on requests that have rows only for the tiers
    that ran, where a call to a tier without a row ends the request as :class:`Unobserved`.
    """
    request = Request(id=item, input=text, created_at=0.0)
    routed = route_request(request, pre, tiers, 0, vector)
    if routed.status is not None:
        return Outcome(item, routed.status, (), "", "", False, 0.0)
    task = routed.task
    while True:
        row = row_of(task.tier)
        if row is None:
            return Unobserved(item, tuple(entry.tier for entry in task.history), task.tier)
        answer = to_answer(task, row.model, completion_from_row(row))
        step = verify_answer(answer, post, tiers, 0.0, max_hops, expired=False)
        if step.escalation is None:
            break
        task = step.escalation
    assert step.status is not None
    result = final_result(task, step.status, answer, step.reason, 0.0, deliver=step.deliver, decision=step.decision)
    delivered = row_of(result.tier) if result.tier else None
    correct = delivered is not None and delivered.correct
    return Outcome(item, result.status, result.path, result.tier, result.output, correct, result.total_cost)


def simulate(
    table: TraceTable, pre: PreCallPolicy, post: PostHocPolicy, max_hops: int | None = None
) -> list[Outcome]:
    """Every item of ``table`` through the stream's own decision functions; ``max_hops`` defaults to
    the portfolio's (:func:`~policies.decisions.hop_limit`), so no cascade stops short of its last tier."""
    max_hops = max_hops or hop_limit(len(table.tiers))
    tiers = table.tier_infos()
    vectors = query_vectors(table, pre.embedding, prefix=pre.query_prefix) if pre.needs_features else None
    outcomes = []
    for i, (item, rows) in enumerate(zip(table.items, table.rows, strict=True)):
        row_of = dict(zip(table.tiers, rows, strict=True)).get
        outcome = run_request(item, rows[0].input, row_of, pre, post, tiers, max_hops,
                              None if vectors is None else vectors[i])  # fmt: skip
        assert isinstance(outcome, Outcome)  # every tier has a row
        outcomes.append(outcome)
    return outcomes


def summarise(outcomes: list[Outcome]) -> Summary:
    return Summary(
        accuracy=float(np.mean([o.correct for o in outcomes])),
        cost=float(np.mean([o.cost for o in outcomes])),
        calls=float(np.mean([len(o.path) for o in outcomes])),
    )
