"""The supervisor sizes its pools from the stream: a backlog grows a tier, a quiet tier sleeps at zero
and wakes when escalations wait for it, and every decision is a signed pool report on the control topic.

The small tier serves 50 requests/s per replica (a 20 ms sleep per request, one request per model
call), so a burst of 400 is a backlog one replica needs 8 s for; the large tier may sleep at zero
replicas and is woken by the escalations the small one sends it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ray

from infra.config import Config
from infra.status import collect_status
from infra.supervisor import await_ready, start_supervisor, stop_supervisor
from topics.admin import delete_topics
from topics.control import ControllerKey, PoolReport, TrustedKeys, decode_control, verify_record
from topics.errors import DecodeError
from topics.reader import TopicReader

from .conftest import WAIT_S, sim_tier, simulated_config
from .helpers import await_delivered, make_requests, send_and_collect

pytestmark = pytest.mark.integration

SIGNER = ControllerKey.generate("autoscale-tests")
SIGNING_ENV = "TIERFLOW_TEST_AUTOSCALE_SIGNER"


def _config(tmp_path: Path) -> Config:
    small = sim_tier("small", 0.6, 1, 0.001, latency_ms=20, partitions=4, batch_size=1)
    small["autoscale"] = {"max_replicas": 3, "target_queue_s": 0.5, "upscale_delay_s": 1, "downscale_delay_s": 3}
    large = sim_tier("large", 0.95, 3, 0.1, partitions=2)
    large["autoscale"] = {"min_replicas": 0, "max_replicas": 2, "target_lag": 20, "downscale_delay_s": 2}
    return simulated_config(
        tmp_path,
        namespace=f"as-{uuid.uuid4().hex[:8]}",
        tiers=[small, large],
        control={"signing_key_env": SIGNING_ENV, "public_keys": {SIGNER.key_id: SIGNER.public_key.hex()}},
    )


def _replicas(handle: Any) -> dict[str, int]:
    described: dict[str, Any] = ray.get(handle.describe.remote(), timeout=WAIT_S)
    return dict(described["replicas"])


def _wait_for(handle: Any, what: str, condition: Any) -> dict[str, int]:
    deadline = time.monotonic() + WAIT_S
    while not condition(replicas := _replicas(handle)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}; replicas {replicas}"
        time.sleep(0.25)
    return replicas


async def _pool_reports(config: Config, kafka: dict[str, Any]) -> list[PoolReport]:
    """Every pool report on the control topic that the controller's key signed, oldest first."""
    trusted = TrustedKeys.from_hex(config.namespace, config.control.public_keys)
    topic = config.layout.control
    reader = TopicReader(kafka, [topic], partitions={topic: 1})
    await reader.start()
    reports = []
    try:
        async for batch in reader.read_to_end():
            for record in batch:
                try:
                    message = decode_control(record.value or b"")
                except DecodeError:
                    continue
                if isinstance(message, PoolReport) and verify_record(message, trusted) is None:
                    reports.append(message)
    finally:
        await reader.stop()
    return reports


def _decisions(reports: list[PoolReport], pool: str) -> list[tuple[int, str]]:
    """(desired, reason) of each report that names ``pool`` as resized."""
    return [(p.desired, p.reason) for r in reports if pool in r.changed for p in r.pools if p.pool == pool]


def test_pools_scale_with_their_backlog_and_sleep_when_idle(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SIGNING_ENV, SIGNER.seed.hex())
    config = _config(tmp_path)
    handle, started = start_supervisor(config, bootstrap)
    assert started
    try:
        await_ready(handle, WAIT_S)
        _wait_for(handle, "the idle large tier to sleep", lambda r: r["worker.large"] == 0)

        requests = make_requests(400, "burst")
        asyncio.run(send_and_collect(config, kafka, requests))
        ids = {r.id for r in requests}
        assert Counter(asyncio.run(await_delivered(config, ids))) == Counter(ids)  # each exactly once

        _wait_for(handle, "both tiers back at rest", lambda r: r["worker.small"] == 1 and r["worker.large"] == 0)
        # The supervisor resizes a pool before it publishes the report that says so: wait for the report too.
        deadline = time.monotonic() + WAIT_S
        while True:
            reports = asyncio.run(_pool_reports(config, kafka))
            small, large = _decisions(reports, "worker.small"), _decisions(reports, "worker.large")
            if (small and small[-1][0] == 1) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert any(n == 3 and reason.startswith("scaled up: lag") for n, reason in small), small
        assert small[-1][0] == 1 and small[-1][1].startswith("scaled down"), small
        assert any(n >= 1 and reason.startswith("woke: lag") for n, reason in large), large
        assert all(1 <= n <= 3 for n, _ in small) and all(0 <= n <= 2 for n, _ in large)
        measured = [p.service_rate for r in reports for p in r.pools if p.pool == "worker.small" and p.service_rate]
        assert measured and 20 < max(measured) < 60  # one replica: 1 request per 20 ms of work, plus overhead

        snapshot = asyncio.run(collect_status(kafka, config))
        assert snapshot.control.pools is not None
        shown = {p.pool: p for p in snapshot.control.pools.pools}
        assert shown["worker.large"].desired == 0 and shown["worker.large"].autoscaled
        assert (shown["router"].desired, shown["router"].running, shown["router"].ready) == (1, 1, 1)
    finally:
        stop_supervisor(handle)
        asyncio.run(delete_topics(kafka, config.layout.all_topics()))
