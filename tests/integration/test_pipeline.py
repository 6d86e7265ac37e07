"""End to end on a real broker and a real local Ray: nothing lost, nothing doubled,
escalation exactly where the policy says, poison records dead-lettered."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import ray

from infra.client import RequestProducer, ResultCollector
from infra.config import Config
from policies import ConfidenceThreshold, TierInfo, VerdictAction
from topics import Answer, Request, Status, Task
from workers.backends.base import Query, create_backend

from ..history import check_history
from .conftest import WAIT_S, running, sim_tier, simulated_config
from .helpers import (
    await_delivered,
    delivered_rows,
    make_requests,
    send_and_await_some,
    send_and_collect,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


async def _offline_outcomes(config: Config, requests: list[Request]) -> dict[str, tuple[tuple[str, ...], Status]]:
    """Path and status each request must get, from the same backends and policy, without Kafka."""
    tiers = tuple(TierInfo(t.name, t.cost) for t in config.tiers)
    policy = ConfidenceThreshold(thresholds={t.name: t.threshold for t in config.tiers})
    backends = {t.name: create_backend(t.backend, t.name, t.options) for t in config.tiers}
    paths = {}
    for request in requests:
        task, path = Task(request, tiers[0].name), []
        while True:
            completion = (await backends[task.tier].infer([Query(request.id, request.input)]))[0]
            answer = Answer(task, "m", completion.output, completion.confidence)
            path.append(task.tier)
            verdict = policy.decide(answer, tiers, 0.0, random.Random(0))
            if verdict.action is not VerdictAction.ESCALATE:
                break
            assert verdict.target is not None
            task = Task(request, verdict.target, hop=task.hop + 1, history=(*task.history, answer.as_history()))
        paths[request.id] = (tuple(path), Status.OK if verdict.action is VerdictAction.ACCEPT else Status.EXHAUSTED)
    return paths


async def test_every_request_gets_exactly_one_result_on_the_path_the_policy_chose(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any]
) -> None:
    config = simulated_config(tmp_path)
    requests = make_requests(300)
    async with running(config, bootstrap, kafka):
        collector = await send_and_collect(config, kafka, requests)
        delivered = await await_delivered(config, {r.id for r in requests})
    results = collector.collected.results
    assert set(results) == {r.id for r in requests}
    assert collector.collected.dead_letters == []

    expected = await _offline_outcomes(config, requests)
    assert {rid: (r.path, r.status) for rid, r in results.items()} == expected
    hops = {len(r.path) for r in results.values()}
    assert hops == {1, 2, 3}, "at these accuracies some requests stop at each tier"
    assert {r.status for r in results.values()} == {Status.OK, Status.EXHAUSTED}

    assert sorted(delivered) == sorted(r.id for r in requests), "the sink delivers each id exactly once"


async def test_poison_records_go_to_the_dlq_and_processing_continues(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any]
) -> None:
    config = simulated_config(tmp_path, limits={"max_payload_bytes": 4096})
    good = make_requests(50, "good")
    poison = {
        "p-not-msgpack": (b"\xc1 definitely not msgpack", "not_msgpack"),
        "p-wrong-type": (msgpack.packb({"k": "request@1", "id": 5, "in": "x", "ca": 1.0}), "wrong_type"),
        "p-missing": (msgpack.packb({"k": "request@1", "in": "x"}), "missing_field"),
        "p-oversized": (Request(id="p-oversized", input="x" * 10_000, created_at=1.0).to_wire(), "too_large"),
        "p-nan": (
            msgpack.packb({"k": "request@1", "id": "p-nan", "in": "x", "ca": float("nan")}),
            "out_of_range",
        ),
    }
    async with running(config, bootstrap, kafka):
        producer = RequestProducer(kafka, config.layout)
        await producer.start()
        try:
            for key, (value, _) in poison.items():
                await producer.send_raw(value, key=key.encode())
        finally:
            await producer.stop()
        collector = await send_and_collect(config, kafka, good, also=set(poison))
    reasons = {d.request_id: d.reason for d in collector.collected.dead_letters}
    assert reasons == {key: reason for key, (_, reason) in poison.items()}
    for letter in collector.collected.dead_letters:
        assert letter.source_topic == config.layout.requests
        assert letter.stage == "router"
        assert letter.offset >= 0 and len(letter.payload_sha256) == 64
    assert set(collector.collected.results) == {r.id for r in good}


async def test_unknown_tier_answers_are_dead_lettered(tmp_path: Path, bootstrap: str, kafka: dict[str, Any]) -> None:
    config = simulated_config(tmp_path)
    bogus = Answer(Task(Request("ghost-1", "q", time.time()), "huge"), "m", "x", 0.9)
    async with running(config, bootstrap, kafka):
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**kafka)
        await producer.start()
        try:
            await producer.send_and_wait(config.layout.answers, bogus.to_wire(), key=b"ghost-1")
        finally:
            await producer.stop()
        collector = await send_and_collect(config, kafka, make_requests(5, "after"))
        collector2 = ResultCollector(kafka, config.layout)
        await collector2.start()
        try:
            missing = await collector2.wait_for({"ghost-1"}, WAIT_S)
        finally:
            await collector2.stop()
    assert not missing
    (letter,) = collector2.collected.dead_letters
    assert (letter.reason, letter.stage, letter.source_topic) == ("unknown_tier", "verifier", config.layout.answers)
    assert len(collector.collected.results) == 5


async def test_expired_requests_end_expired(tmp_path: Path, bootstrap: str, kafka: dict[str, Any]) -> None:
    config = simulated_config(tmp_path)
    now = time.time()
    stale = [Request(id=f"old-{i}", input="q", created_at=now - 10, deadline=now - 5) for i in range(5)]
    async with running(config, bootstrap, kafka):
        collector = await send_and_collect(config, kafka, stale)
    assert {r.status for r in collector.collected.results.values()} == {Status.EXPIRED}


async def test_graceful_stop_mid_stream_loses_nothing(tmp_path: Path, bootstrap: str, kafka: dict[str, Any]) -> None:
    config = _slow_config(tmp_path)
    requests = make_requests(400, "gs")
    ids = {r.id for r in requests}
    collector = ResultCollector(kafka, config.layout)
    async with running(config, bootstrap, kafka) as first:
        await send_and_await_some(config, kafka, requests, collector, 30)
        await asyncio.wait_for(first.stop(), timeout=WAIT_S)  # graceful stop while work is in flight
        done_before_restart = len(collector.collected.results)
        assert done_before_restart < len(requests), "the stop must happen mid-stream"
        second = await _restart(config, first)
        try:
            missing = await collector.wait_for(ids, WAIT_S)
            delivered = await await_delivered(config, ids)
        finally:
            await asyncio.wait_for(second.stop(), timeout=WAIT_S)
            await collector.stop()
    assert not missing
    assert set(collector.collected.results) == ids
    assert len(delivered) == len(set(delivered)) == len(ids)


async def _restart(config: Config, stopped: Any) -> Any:
    from infra.pipeline import Pipeline

    pipeline = Pipeline(config, stopped.bootstrap)
    await asyncio.wait_for(pipeline.start(ready_timeout_s=WAIT_S), timeout=WAIT_S + 10)
    return pipeline


def _slow_config(tmp_path: Path, latency_ms: float = 20.0) -> Config:
    """Two tiers that take ``latency_ms`` per batch of 8, so a stream is still in flight when we interfere."""
    tiers = [
        sim_tier("small", 0.6, 1, 0.001, latency_ms=latency_ms, batch_size=8),
        sim_tier("large", 0.95, 3, 0.1, latency_ms=latency_ms, batch_size=8),
    ]
    return simulated_config(tmp_path, tiers=tiers, limits={"max_batch": 8})


async def _signal_mid_stream(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], pool_name: str, signum: signal.Signals
) -> tuple[ResultCollector, Config, Any]:
    """Stream 250 requests, send ``signum`` to one replica of ``pool_name`` mid-stream, then 50 more (only the
    replica that replaced or restarted it can read those), and collect everything."""
    config = _slow_config(tmp_path)
    requests = make_requests(300, f"sig{signum.value}")
    head, tail = requests[:250], requests[250:]
    collector = ResultCollector(kafka, config.layout)
    async with running(config, bootstrap, kafka) as pipeline:
        pool = pipeline.pools[pool_name]
        (stats,) = await pipeline.pool_stats(pool)
        # Signal early: after 30 results a loaded machine's router had sometimes routed all of them already.
        await send_and_await_some(config, kafka, head, collector, 5)
        os.kill(stats["pid"], signum)
        if signum is signal.SIGTERM:
            # A graceful stop is final for the replica (Ray does not restart it); the pipeline starts another.
            (old_run,) = pool.runs
            done, _ = ray.wait([old_run], timeout=WAIT_S)
            assert done, "the replica did not stop after SIGTERM"
            with pytest.raises(ray.exceptions.ActorDiedError, match="INTENDED"):
                ray.get(old_run)
            for _ in range(int(WAIT_S / 0.2)):  # the pipeline's watch looks every second
                if pool.runs[0] is not old_run:
                    break
                await asyncio.sleep(0.2)
            assert pool.runs[0] is not old_run, "the pipeline did not replace the departed replica"
        producer = RequestProducer(kafka, config.layout)
        await producer.start()
        await producer.send_many(tail)
        await producer.stop()
        try:
            missing = await collector.wait_for({r.id for r in requests}, WAIT_S)
        finally:
            await collector.stop()
        report = await check_history(kafka, config, [r.id for r in requests])
        final_stats = await pipeline.pool_stats(pool)
    assert not missing
    report.assert_ok()
    assert report.results == len(requests)
    return collector, config, final_stats


@pytest.mark.parametrize(
    ("pool", "signum"),
    [
        ("router", signal.SIGTERM),
        ("router", signal.SIGKILL),
        ("verifier", signal.SIGTERM),
        ("verifier", signal.SIGKILL),
        ("worker.small", signal.SIGKILL),
    ],
)
async def test_a_signalled_replica_loses_nothing(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], pool: str, signum: signal.Signals
) -> None:
    """SIGTERM: a graceful stop (finish, commit, leave), and the pipeline starts a replacement. SIGKILL: Ray
    restarts the replica, which resumes from the last commit and redoes the batch it was killed in."""
    _, _, stats = await _signal_mid_stream(tmp_path, bootstrap, kafka, pool, signum)
    (replica,) = stats  # the pool keeps its one replica either way
    assert replica["consumed"] > 0, "the restarted or replacing replica took over the partitions"


async def test_one_trace_per_request_across_every_hop(tmp_path: Path, bootstrap: str, kafka: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from workers.telemetry import new_trace_headers, trace_id

    config = simulated_config(tmp_path)
    requests = make_requests(40, "tr")
    sent_traces = {}
    async with running(config, bootstrap, kafka):
        producer = AIOKafkaProducer(**kafka)
        await producer.start()
        try:
            for request in requests:
                headers = new_trace_headers()
                sent_traces[request.id] = trace_id(headers)
                await producer.send_and_wait(
                    config.layout.requests, request.to_wire(), key=request.id.encode(), headers=headers
                )
        finally:
            await producer.stop()
        layout = config.layout
        topics = [layout.answers, layout.results] + [layout.escalate(t) for t in layout.tiers]
        consumer = AIOKafkaConsumer(*topics, **kafka, group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        seen: dict[str, set[str | None]] = {}
        results = 0
        try:
            deadline = time.monotonic() + WAIT_S
            while results < len(requests) and time.monotonic() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for record in records:
                        seen.setdefault(record.key.decode(), set()).add(trace_id(record.headers))
                        results += tp.topic == layout.results
        finally:
            await consumer.stop()
    assert results == len(requests)
    assert seen == {rid: {trace} for rid, trace in sent_traces.items()}


async def test_duplicate_request_ids_get_one_delivered_result(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any]
) -> None:
    config = simulated_config(tmp_path)
    requests = make_requests(30, "dup")
    async with running(config, bootstrap, kafka):
        first = await send_and_collect(config, kafka, requests + requests)  # the same ids twice, together
        later = await send_and_collect(config, kafka, requests)  # and once more after they were answered
        await await_delivered(config, {r.id for r in requests})
        await asyncio.sleep(1.0)  # a late second delivery would show up here
        rows = delivered_rows(config)
    assert sorted(row["id"] for row in rows) == sorted(r.id for r in requests), "each id is delivered exactly once"
    assert later.collected.raw_duplicates >= len(requests), "the topic does hold the repeats"
    assert first.collected.results.keys() == later.collected.results.keys()
    costs = {row["id"]: row["cost"] for row in rows}
    assert all(costs[r.id] == first.collected.results[r.id].total_cost for r in requests), "cost counted once"
