"""Exploration on the real broker and Ray: exactly the drawn requests also run on the tiers the policy
skipped, every result records its propensities, no copy is ever delivered, and a trace built from the
topics (``tierflow trace --from-kafka``'s own functions) carries each row's propensity."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from infra.cli.feedback import _send
from infra.lab.stream_trace import read_stream, stream_trace
from policies.exploration import explores
from topics.feedback import Feedback

from .conftest import WAIT_S, running, simulated_config
from .helpers import await_delivered, make_requests, send_and_collect

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

SHARE = 0.25
LADDER = ("small", "medium", "large")


async def _copies(kafka: dict[str, Any], config: Any, expected: int) -> set[tuple[str, str]]:
    """(request id, tier) of the copies answered on ``<ns>.explored``, once ``expected`` are there."""
    deadline = time.monotonic() + WAIT_S
    while True:
        join = await read_stream(kafka, config.layout, config.partitions())
        seen = {(rid, tier) for rid, by_tier in join.copies.items() for tier in by_tier}
        if len(seen) >= expected or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.5)


async def test_drawn_requests_run_on_every_tier_and_their_propensities_reach_the_trace(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any]
) -> None:
    config = simulated_config(tmp_path, exploration={"share": SHARE, "salt": "it"})
    requests = make_requests(160, "ex")
    drawn = {r.id for r in requests if explores(r.id, SHARE, "it")}
    assert 0 < len(drawn) < len(requests)
    async with running(config, bootstrap, kafka) as pipeline:
        collector = await send_and_collect(config, kafka, requests)
        results = collector.collected.results
        assert {rid for rid, r in results.items() if r.explored} == drawn
        assert all(r.propensities == {"small": 1.0, "medium": SHARE, "large": SHARE} for r in results.values())
        delivered = await await_delivered(config, set(results))
        assert sorted(delivered) == sorted(results)  # one result each: no copy was ever delivered

        copies = await _copies(kafka, config, 2 * len(drawn))
        assert copies == {(rid, tier) for rid in drawn for tier in ("medium", "large")}
        state = await asyncio.wait_for(pipeline.controller.state.remote(), timeout=WAIT_S)
        assert state["exploration"]["share"] == SHARE and state["exploration"]["copies"] >= 2 * len(drawn)

        labels = [Feedback(rid, "it", time.time(), correct=True) for rid in results]
        await asyncio.wait_for(_send(config, bootstrap, labels), timeout=WAIT_S)
        trace = stream_trace(await read_stream(kafka, config.layout, config.partitions()), one_right_answer=True)

    rows: dict[str, dict[str, Any]] = {}
    for row in trace.rows:
        rows.setdefault(row.item_id, {})[row.tier] = row
    assert set(rows) == set(results) and trace.explored == len(drawn)
    for rid, by_tier in rows.items():
        path = results[rid].path
        expected = set(LADDER) if rid in drawn else set(path)
        assert set(by_tier) == expected, rid
        assert all(row.propensity == (1.0 if tier in path else SHARE) for tier, row in by_tier.items())
        assert by_tier[results[rid].tier].correct  # the label's answer
