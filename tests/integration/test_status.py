"""`tierflow status` reads results, lag and controller state from Kafka alone (no Ray, no group joined)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.config import Config, parse_config
from infra.status import collect_status, status_json
from topics.admin import delete_topics, ensure_topics
from topics.control import (
    ControllerKey,
    ControllerRecord,
    ControllerReport,
    ControlReply,
    Observed,
    PolicyUpdate,
    Targets,
)
from topics.messages import Result, Status

pytestmark = pytest.mark.integration

WAIT_S = 60.0
NOW = time.time()

CLI = (
    "import argparse, sys\n"
    "from infra.status import add_status_parser, run_status\n"
    "parser = argparse.ArgumentParser()\n"
    "add_status_parser(parser.add_subparsers(dest='command'))\n"
    "sys.exit(run_status(parser.parse_args(sys.argv[1:])))\n"
)


SIGNER = ControllerKey.generate("ctl")
"""The controller key the records written here are signed with; the configs list its public key."""


def _config(namespace: str) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "results_path": "results.jsonl",
        "control": {"public_keys": {"ctl": SIGNER.public_key.hex()}},
        "router": {"partitions": 2},
        "verifier": {"partitions": 1},
        "sink": {"partitions": 2},
        "tiers": [
            {"name": "small", "backend": "simulated", "partitions": 1, "threshold": 0.8},
            {"name": "large", "backend": "simulated", "partitions": 1, "threshold": 0.0},
        ],
    }


def _result(n: int, age_s: float, *, latency: float, cost: float, path: tuple[str, ...], status: Status) -> Result:
    return Result(
        request_id=f"r{n}",
        status=status,
        output="x",
        tier=path[-1] if path else "",
        confidence=0.5,
        total_cost=cost,
        latency_ms=latency,
        path=path,
        completed_at=NOW - age_s,
    )


def _results() -> list[tuple[int, Result]]:
    """(partition, result), oldest first, stamped relative to NOW: two old ones outside every window,
    then 4 in the 10 s window with latencies 100..400 and costs 0.01/0.02/0.03/0.04."""
    old = [(p, _result(10 + p, 100.0, latency=9999.0, cost=9.0, path=("large",), status=Status.OK)) for p in (0, 1)]
    return [
        *old,
        (1, _result(4, 4.0, latency=400.0, cost=0.04, path=("small", "large"), status=Status.EXHAUSTED)),
        (0, _result(3, 3.0, latency=300.0, cost=0.03, path=("small",), status=Status.OK)),
        (1, _result(2, 2.0, latency=200.0, cost=0.02, path=("small", "large"), status=Status.OK)),
        (0, _result(1, 1.0, latency=100.0, cost=0.01, path=("small",), status=Status.OK)),
    ]


TARGETS = Targets(cost_per_request=0.02, latency_ms=500.0, latency_quantile=0.5)


@pytest.fixture
async def deployment(kafka: dict[str, Any]) -> AsyncIterator[Config]:
    # Records are stamped relative to NOW and the CLI reads the wall clock: NOW must be the time of
    # filling, not of collection (a full run reaches this module minutes after collecting it).
    global NOW
    NOW = time.time()
    config = parse_config(_config(f"st-{uuid.uuid4().hex[:10]}"))
    await asyncio.wait_for(ensure_topics(kafka, config.partitions()), WAIT_S)
    try:
        await asyncio.wait_for(_fill(kafka, config), WAIT_S)
        yield config
    finally:
        await asyncio.wait_for(delete_topics(kafka, config.layout.all_topics()), WAIT_S)


async def _fill(kafka: dict[str, Any], config: Config) -> None:
    layout = config.layout
    producer = AIOKafkaProducer(**kafka)

    def signed(record: ControllerRecord) -> bytes:
        return SIGNER.sign(record, config.namespace).to_wire()

    await producer.start()
    try:

        async def put(topic: str, partition: int, value: bytes, count: int = 1) -> None:
            for _ in range(count):  # one batch per record: the end offset Tansu reports is then exact
                await producer.send_and_wait(topic, value, partition=partition)

        for partition, result in _results():
            await put(layout.results, partition, result.to_wire())
        await put(layout.results, 0, b"not msgpack")
        await put(layout.requests, 0, b"q", 5)
        await put(layout.requests, 1, b"q", 3)
        await put(layout.tier("small"), 0, b"t", 4)
        await put(layout.escalate("large"), 0, b"t", 3)
        old_policy = PolicyUpdate(
            version=1, thresholds={"small": 0.5}, allowed_tiers=("small",), reason="a", issued_at=1
        )
        report = ControllerReport(
            targets=TARGETS, observed=Observed(requests=7, rate=0.7), version=1, lam=0.1, mu=0.0, at=NOW - 9
        )
        control = [
            signed(old_policy),
            signed(report),
            signed(ControlReply(offset=0, accepted=False, reason="bad_signature", key_id="ops", seq=1)),
            b"\x00garbage",
            signed(
                PolicyUpdate(
                    version=2,
                    thresholds={"small": 0.7, "large": 0.0},
                    allowed_tiers=("small", "large"),
                    reason="cost above target",
                    issued_at=NOW - 2,
                    lam=0.25,
                )
            ),
            signed(
                ControllerReport(
                    targets=TARGETS,
                    observed=Observed(requests=4, window_s=10.0, rate=0.4, cost_per_request=0.025),
                    version=2,
                    lam=0.25,
                    mu=0.0,
                    at=NOW - 1,
                    paused=("large",),
                    rejected={"bad_signature": 1},
                )
            ),
            signed(ControlReply(offset=5, accepted=True, reason="ok", key_id="ops", seq=2)),
            # what an outsider with a plain producer writes: shown nowhere, counted as unsigned
            PolicyUpdate(
                version=1000, thresholds={"small": 0.0}, allowed_tiers=(), reason="x", issued_at=NOW
            ).to_wire(),
            ControlReply(offset=9, accepted=True, reason="paused", key_id="ops", seq=3).to_wire(),
        ]
        for value in control:
            await put(layout.control, 0, value)
    finally:
        await producer.stop()
    commits = {
        "router": {TopicPartition(layout.requests, 0): 2},  # partition 1: nothing committed
        "worker.small": {TopicPartition(layout.tier("small"), 0): 4},
        "sink": {TopicPartition(layout.results, 0): 4, TopicPartition(layout.results, 1): 1},
    }
    for pool, offsets in commits.items():
        consumer = AIOKafkaConsumer(**kafka, group_id=f"{config.namespace}.{pool}", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(offsets))
            await consumer.commit(offsets)
        finally:
            await consumer.stop()


async def test_status_reads_window_lag_and_controller(kafka: dict[str, Any], deployment: Config) -> None:
    snapshot = await asyncio.wait_for(collect_status(kafka, deployment, window_s=10.0, now=NOW), WAIT_S)
    doc = status_json(snapshot)
    results = doc["results"]
    assert results["count"] == 4
    assert results["rate"] == pytest.approx(0.4)
    assert results["by_status"] == {"exhausted": 1, "ok": 3}
    assert results["latency_ms"] == {"p50": 250.0, "p95": 385.0, "p99": 397.0}
    assert results["cost_per_request"] == pytest.approx(0.025)
    assert results["cost_per_second"] == pytest.approx(0.01)
    assert results["escalation_rate"] == pytest.approx(0.5)
    assert results["answered_share"] == {"small": 0.5, "large": 0.5}
    assert results["tier_answers_per_s"] == pytest.approx({"small": 0.4, "large": 0.2})
    assert len(snapshot.results) == 6  # the old ones were read (the walk reached the partition start) but left out
    assert doc["undecodable"] == {"results": 1, "control": 1, "unsigned": 2}, snapshot.control.unsigned
    assert doc["truncated"] is False

    # results: p0 holds old, r3, r1, junk (end 4), p1 old, r4, r2 (end 3); sink committed 4 and 1
    assert doc["lag"] == {"router": 6, "verifier": 0, "worker.small": 0, "worker.large": 3, "sink": 2}
    assert doc["uncommitted_pools"] == ["router", "worker.large"]

    controller = doc["controller"]
    assert controller["version"] == 2 and controller["lam"] == 0.25
    assert controller["paused"] == ["large"] and controller["rejected"] == {"bad_signature": 1}
    assert controller["thresholds"] == {"small": 0.7, "large": 0.0}
    assert controller["observed"]["cost_per_request"] == 0.025
    assert controller["age_s"] == pytest.approx(1.0)
    assert doc["policy"]["version"] == 2 and doc["policy"]["reason"] == "cost above target"
    assert [r["offset"] for r in doc["replies"]] == [5, 0]
    assert doc["replies"][0]["accepted"] is True and doc["replies"][1]["reason"] == "bad_signature"
    assert doc["cost_vs_target"] == {
        "cost_per_request": {"target": 0.02, "observed": pytest.approx(0.025), "error_pct": 25.0},
        "latency_ms": {"target": 500.0, "observed": 250.0, "error_pct": -50.0, "quantile": 0.5},
    }
    json.dumps(doc)  # plain JSON all the way down


async def test_status_walks_back_in_chunks(
    kafka: dict[str, Any], deployment: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import infra.status.reader

    monkeypatch.setattr(infra.status.reader, "CHUNK", 2)
    # p0: [old, r3] [r1, junk] -> r1 is 1 s old, go on; r3 and old are read, old ends the walk.
    # p1: [old] [r4, r2] -> r4 is 4 s old, before the 2.5 s window: the walk stops, old is never read.
    snapshot = await asyncio.wait_for(collect_status(kafka, deployment, window_s=2.5, now=NOW), WAIT_S)
    assert sorted(r.request_id for r in snapshot.results) == ["r1", "r10", "r2", "r3", "r4"]
    doc = status_json(snapshot)
    assert doc["results"]["count"] == 2 and doc["truncated"] is False
    assert doc["controller"]["version"] == 2 and doc["policy"]["version"] == 2  # control read in chunks too
    assert [r["offset"] for r in doc["replies"]] == [5, 0] and doc["undecodable"]["control"] == 1
    assert doc["undecodable"]["unsigned"] == 2

    monkeypatch.setattr(infra.status.reader, "MAX_RECORDS_PER_PARTITION", 2)
    doc = status_json(await asyncio.wait_for(collect_status(kafka, deployment, window_s=10.0, now=NOW), WAIT_S))
    assert doc["results"]["count"] == 3 and doc["truncated"] is True  # r3 (p0, third from the end) left out


async def test_status_without_controller_and_unknown_namespace(kafka: dict[str, Any]) -> None:
    from topics.errors import ConfigError

    config = parse_config(_config(f"st-{uuid.uuid4().hex[:10]}"))
    with pytest.raises(ConfigError, match="has no topics"):
        await asyncio.wait_for(collect_status(kafka, config), WAIT_S)
    await asyncio.wait_for(ensure_topics(kafka, config.partitions()), WAIT_S)
    try:
        doc = status_json(await asyncio.wait_for(collect_status(kafka, config), WAIT_S))
    finally:
        await asyncio.wait_for(delete_topics(kafka, config.layout.all_topics()), WAIT_S)
    assert doc["controller"] is None and doc["policy"] is None and doc["replies"] == []
    assert doc["results"]["count"] == 0 and set(doc["lag"].values()) == {0}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, "status", *args], capture_output=True, text=True, timeout=WAIT_S, check=False
    )


async def test_cli_once(deployment: Config, bootstrap: str, tmp_path: Path) -> None:
    path = tmp_path / "tierflow.toml"
    tiers = "".join(f'[[tiers]]\nname = "{t.name}"\nbackend = "simulated"\n\n' for t in deployment.tiers)
    keys = f'[control]\npublic_keys = {{ ctl = "{SIGNER.public_key.hex()}" }}\n\n'
    path.write_text(f'namespace = "{deployment.namespace}"\nresults_path = "r.jsonl"\n\n{keys}{tiers}')
    proc = await asyncio.to_thread(_cli, "--config", str(path), "--bootstrap", bootstrap, "--once", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["namespace"] == deployment.namespace
    assert doc["window_s"] == 10.0
    assert doc["controller"]["version"] == 2 and doc["lag"]["router"] == 6
    proc = await asyncio.to_thread(_cli, "--config", str(path), "--bootstrap", bootstrap, "--once", "--window", "60")
    assert proc.returncode == 0, proc.stderr
    for fragment in ("results, last 60 s", "worker.large", "paused", "policy v2", "cost per request", "+25.0%"):
        assert fragment in proc.stdout, proc.stdout


async def test_cli_once_without_the_controllers_public_key_shows_no_controller(
    deployment: Config, bootstrap: str, tmp_path: Path
) -> None:
    path = tmp_path / "tierflow.toml"
    tiers = "".join(f'[[tiers]]\nname = "{t.name}"\nbackend = "simulated"\n\n' for t in deployment.tiers)
    path.write_text(f'namespace = "{deployment.namespace}"\nresults_path = "r.jsonl"\n\n{tiers}')
    proc = await asyncio.to_thread(_cli, "--config", str(path), "--bootstrap", bootstrap, "--once", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["controller"] is None and doc["policy"] is None and doc["replies"] == []
    assert doc["undecodable"]["unsigned"] >= 6  # every report, update and reply was left out
