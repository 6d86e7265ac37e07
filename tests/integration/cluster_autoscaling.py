"""Run in its own process by test_ray_cluster: the cluster autoscaler adds a node for a waking tier.

A Ray head with 4 CPUs and an autoscaler that may add one node of type ``tier`` (the only
one offering the custom resource ``tier_node``; ``min_workers = 0``). The tier asks for that
resource and may sleep at zero replicas. Its first replica waits for the autoscaler to add a
node; idle, the tier sleeps and the autoscaler gives the node back; requests that escalate to
it wake it, a node is added again, and every request is answered. Prints one JSON object.
"""

from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "token"  # before Ray is imported (see fake_autoscaling.py)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import asyncio
import json
import sys
import tempfile
import time
import uuid
from typing import Any

import ray

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import Config, RayConfig, parse_config
from infra.ray_cluster import start_ray
from infra.supervisor import await_ready, start_supervisor, stop_supervisor
from topics.messages import Request

from .fake_autoscaling import FakeAutoscalingCluster, wait_until

POOL = "worker.large"
WORKER_TYPES = {
    "tier": {"resources": {"CPU": 2, "tier_node": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1},
}
"""The one node type offering ``tier_node``: none at first, at most one."""


def _config(address: str) -> Config:
    small = {"name": "small", "backend": "simulated", "threshold": 0.99, "num_cpus": 0.1, "options": {"accuracy": 0.5}}
    large = {
        "name": "large",
        "backend": "simulated",
        "threshold": 0.0,
        "num_cpus": 0.1,
        "resources": {"tier_node": 1},
        "options": {"accuracy": 0.9},
        "autoscale": {"min_replicas": 0, "max_replicas": 2, "target_lag": 10, "downscale_delay_s": 3},
    }
    return parse_config(
        {
            "namespace": f"ca-{uuid.uuid4().hex[:8]}",
            "tiers": [small, large],
            "ray": {"address": address},
            "broker": {"session_timeout_ms": 2000},
        }
    )


def _tier_nodes() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("tier_node"))


def _desired(handle: Any) -> int:
    described: dict[str, Any] = ray.get(handle.describe.remote(), timeout=60)
    return int(described["pools"].get(POOL, {}).get("desired", -1))


async def _wake(config: Config, bootstrap: str) -> dict[str, Any]:
    """Send requests the small tier escalates; the most tier nodes seen while they are answered."""
    kafka = kafka_options(config.broker, bootstrap)
    producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
    await producer.start()
    await collector.start()
    try:
        requests = [Request(f"w{i}", "q", time.time()) for i in range(30)]
        await producer.send_many(requests)
        nodes, deadline = 0, time.monotonic() + 150
        while len(collector.collected.results) < len(requests) and time.monotonic() < deadline:
            await collector.poll()
            nodes = max(nodes, _tier_nodes())
        paths = sorted({tuple(r.path) for r in collector.collected.results.values()})
        return {"answered": len(collector.collected.results), "nodes_while_awake": nodes, "paths": paths}
    finally:
        await producer.stop()
        await collector.stop()


def main() -> None:
    cluster = FakeAutoscalingCluster(head_cpus=4, worker_types=WORKER_TYPES, idle_timeout_s=5)
    cluster.start()
    try:
        start_ray(RayConfig(address=cluster.address))
        assert _tier_nodes() == 0
        with EmbeddedBroker(log_dir=tempfile.mkdtemp(prefix="tierflow-autoscaling-")) as bootstrap:
            config = _config(cluster.address)
            handle, _ = start_supervisor(config, bootstrap)
            started = time.monotonic()
            await_ready(handle, 150)  # the tier's first replica waited for a node to be added
            report: dict[str, Any] = {"ready_s": round(time.monotonic() - started, 1), "nodes_at_start": _tier_nodes()}
            report["slept"] = wait_until(lambda: _desired(handle) == 0, 60)
            report["released"] = wait_until(lambda: _tier_nodes() == 0, 120)
            report |= asyncio.run(_wake(config, bootstrap))
            report["slept_again"] = wait_until(lambda: _desired(handle) == 0, 60)
            report["released_again"] = wait_until(lambda: _tier_nodes() == 0, 120)
            stop_supervisor(handle, timeout_s=20)
        sys.stdout.write(json.dumps(report) + "\n")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
