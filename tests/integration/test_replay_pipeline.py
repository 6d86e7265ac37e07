"""Trace → replay → pipeline: the stream reproduces a recorded trace, and the lab's decisions, exactly.

A trace of the simulated portfolio is recorded with ``tierflow trace``'s code, the
three tiers are replaced by ``replay`` tiers reading it, and the items are streamed
through router, workers and verifier on the real broker and Ray. Every result must
carry exactly the recorded answer of the tier that delivered it, the path must be
what the threshold rule gives on the trace, and the cost the sum along that path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from infra.config import parse_config, with_policy_file
from infra.lab.evaluate import LabOptions, fit
from infra.lab.simulate import simulate
from infra.lab.table import TraceTable
from infra.recorder import TraceOptions, run_trace
from policies.file import load_policy
from topics import Request
from topics.messages import Status
from topics.traces import TraceRow, read_trace

from .conftest import running
from .helpers import send_and_collect

pytestmark = pytest.mark.integration
THRESHOLDS = {"small": 0.8, "medium": 0.7, "large": 0.0}


def expected_outcome(rows: dict[str, TraceRow], order: list[str]) -> tuple[tuple[str, ...], TraceRow, Status]:
    """The threshold cascade on recorded rows: path, delivered row, status."""
    path: list[str] = []
    for tier in order:
        path.append(tier)
        row = rows[tier]
        if row.error is None and (row.confidence or 0.0) >= THRESHOLDS[tier]:
            return tuple(path), row, Status.OK
    best = max(reversed([rows[t] for t in path]), key=lambda r: r.confidence or 0.0)
    return tuple(path), best, Status.EXHAUSTED


async def test_replayed_trace_streams_to_the_recorded_answers(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None
) -> None:
    trace = tmp_path / "trace.jsonl"
    options = TraceOptions("simulated", n=120, seed=7, out=str(trace))
    rows = await asyncio.to_thread(run_trace, options, Console(quiet=True))
    order = ["small", "medium", "large"]
    config = parse_config(
        {
            "namespace": f"t-{uuid.uuid4().hex[:10]}",
            "results_path": str(tmp_path / "results.jsonl"),
            "broker": {"session_timeout_ms": 2000, "fetch_max_wait_ms": 10},
            "tiers": [
                {"name": tier, "backend": "replay", "threshold": THRESHOLDS[tier], "partitions": 2, "num_cpus": 0.1,
                 "options": {"trace": str(trace)}}
                for tier in order
            ],
        }
    )  # fmt: skip
    by_item: dict[str, dict[str, TraceRow]] = {}
    for row in rows:
        by_item.setdefault(row.item_id, {})[row.tier] = row
    now = time.time()
    requests = [Request(id=item, input=tiers["small"].input, created_at=now) for item, tiers in by_item.items()]

    async with running(config, bootstrap, kafka):
        collector = await send_and_collect(config, kafka, requests)

    results = collector.collected.results
    assert len(results) == len(requests)
    escalated = 0
    for item, tiers in by_item.items():
        path, row, status = expected_outcome(tiers, order)
        result = results[item]
        assert result.path == path, item
        assert result.status is status, item
        assert (result.tier, result.output, result.confidence, result.model) == (
            row.tier, row.output, row.confidence, row.model,
        )  # fmt: skip
        assert result.total_cost == pytest.approx(sum(tiers[t].cost for t in path), rel=1e-12)
        escalated += len(path) > 1
    assert 0 < escalated < len(requests)  # the run exercised both accepting and escalating


@pytest.mark.parametrize("policy_name", ["frugalgpt", "lm_cascade", "optllm", "cascade_routing"])
async def test_a_fitted_policy_file_decides_in_the_stream_exactly_as_in_eval(
    policy_name: str, tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None
) -> None:
    """``tierflow fit`` writes the file; the pipeline runs it; every path and answer equals the lab's simulation.

    Post-hoc cascades (FrugalGPT, LM Cascades), a pre-call router that embeds the query in the router actors
    (OptLLM) and the hybrid whose router and verifier share state through the task (cascade routing).
    """
    trace = tmp_path / "trace.jsonl"
    await asyncio.to_thread(run_trace, TraceOptions("simulated", n=150, seed=11, out=str(trace)), Console(quiet=True))
    policy_path = tmp_path / "policy.json"
    quiet = Console(quiet=True)
    await asyncio.to_thread(fit, LabOptions(str(trace)), policy_name, 0.004, None, str(policy_path), quiet)
    table = TraceTable.from_rows(read_trace(trace))
    expected = {o.item: o for o in simulate(table, *load_policy(policy_path).build())}

    order = list(table.tiers)
    config = parse_config(
        {
            "namespace": f"t-{uuid.uuid4().hex[:10]}",
            "results_path": str(tmp_path / "results.jsonl"),
            "broker": {"session_timeout_ms": 2000, "fetch_max_wait_ms": 10},
            "tiers": [
                {"name": tier, "backend": "replay", "partitions": 2, "num_cpus": 0.1, "options": {"trace": str(trace)}}
                for tier in order
            ],
        }
    )
    config = with_policy_file(config, policy_path)
    policy_file = load_policy(policy_path)
    assert (config.policies.pre_call, config.policies.post_hoc) == (policy_file.pre_call, policy_file.post_hoc)
    now = time.time()
    inputs = [rows[0].input for rows in table.rows]
    requests = [Request(id=i, input=text, created_at=now) for i, text in zip(table.items, inputs, strict=True)]
    async with running(config, bootstrap, kafka):
        collector = await send_and_collect(config, kafka, requests)

    results = collector.collected.results
    assert set(results) == set(expected)
    for item, outcome in expected.items():
        result = results[item]
        assert (result.path, result.status, result.tier, result.output) == (
            outcome.path, outcome.status, outcome.tier, outcome.output,
        ), item  # fmt: skip
        assert result.total_cost == pytest.approx(outcome.cost, rel=1e-12)
    assert len({o.path for o in expected.values()}) > 1  # the policy took different paths for different items
    if policy_name == "optllm":
        assert len({o.path[0] for o in expected.values()}) > 1  # the router started items at different tiers
