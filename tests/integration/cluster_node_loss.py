"""Run in its own process by test_ray_cluster: lose the node that holds a tier's replicas mid-stream.

A three-node Ray cluster on one machine: a head for the light pools and the supervisor, and
two workers offering the custom resource ``tier_node`` the tier asks for. The tier's two
replicas start on the first worker (the second joins after the deployment is ready); mid-
stream the first worker is removed. Ray restarts the replicas where the resource still
exists, the stream finishes, and the results sink's file is the history to check. Then the
second worker is removed too: nothing fits the tier any more, and the supervisor must report
the pool under capacity (ready below desired) instead of pretending. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray
from ray.cluster_utils import Cluster

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import Config, RayConfig, parse_config
from infra.ray_cluster import start_ray
from infra.supervisor import await_ready, start_supervisor, stop_supervisor
from topics.messages import Request

from .fake_autoscaling import wait_until

POOL = "worker.small"
REQUESTS = 400


def _config(workdir: Path, address: str) -> Config:
    tier = {
        "name": "small",
        "backend": "simulated",
        "threshold": 0.0,
        "replicas": 2,
        "num_cpus": 0.1,
        "resources": {"tier_node": 1},
        "batch_size": 1,
        "options": {"accuracy": 0.9, "latency_ms": 10},
    }
    namespace = f"nl-{uuid.uuid4().hex[:8]}"
    return parse_config(
        {
            "namespace": namespace,
            "results_path": str(workdir / "results.jsonl"),
            "tiers": [tier],
            "ray": {"address": address},
            "broker": {"session_timeout_ms": 2000},
            "router": {"num_cpus": 0.1},
            "verifier": {"num_cpus": 0.1},
            "sink": {"num_cpus": 0.1},
        }
    )


def _pool(handle: Any) -> dict[str, Any]:
    described: dict[str, Any] = ray.get(handle.describe.remote(), timeout=60)
    return dict(described["pools"].get(POOL, {}))


def _nodes_of(namespace: str) -> list[str]:
    prefix = f"{namespace}.{POOL}."
    names = [name for name in ray.util.list_named_actors() if name.startswith(prefix)]
    return sorted(str(ray.get(ray.get_actor(name).node_id.remote(), timeout=60)) for name in names)


async def _stream(config: Config, bootstrap: str, cluster: Cluster, first: Any) -> dict[str, Any]:
    kafka = kafka_options(config.broker, bootstrap)
    producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
    await producer.start()
    await collector.start()
    try:
        requests = [Request(f"n{i}", "q", time.time()) for i in range(REQUESTS)]
        await producer.send_many(requests[: REQUESTS // 2])
        deadline = time.monotonic() + 60
        while len(collector.collected.results) < REQUESTS // 8 and time.monotonic() < deadline:
            await collector.poll()
        cluster.remove_node(first)  # mid-stream: the node holding both replicas goes away
        await producer.send_many(requests[REQUESTS // 2 :])
        missing = await collector.wait_for({r.id for r in requests}, 150)
        return {"missing": len(missing), "answered_before_loss": REQUESTS // 8}
    finally:
        await producer.stop()
        await collector.stop()


def _delivered(config: Config) -> Counter[str]:
    deadline = time.monotonic() + 60
    while True:
        path = Path(config.results_path)
        rows = [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []
        if len(set(rows)) >= REQUESTS or time.monotonic() > deadline:
            return Counter(rows)
        time.sleep(0.2)


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "node_ip_address": "127.0.0.1"})
    first = cluster.add_node(num_cpus=2, resources={"tier_node": 2}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    workdir = Path(tempfile.mkdtemp(prefix="tierflow-node-loss-"))
    try:
        start_ray(RayConfig(address=cluster.address))
        with EmbeddedBroker(log_dir=str(workdir)) as bootstrap:
            config = _config(workdir, cluster.address)
            handle, _ = start_supervisor(config, bootstrap)
            await_ready(handle, 120)
            before = _nodes_of(config.namespace)
            second = cluster.add_node(num_cpus=2, resources={"tier_node": 2}, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes()
            report: dict[str, Any] = asyncio.run(_stream(config, bootstrap, cluster, first))
            after = _nodes_of(config.namespace)
            delivered = _delivered(config)
            cluster.remove_node(second)  # now nothing offers tier_node
            # Both replicas lived on that node; each is seen gone at its own health probe, so wait for both.
            wait_until(lambda: _pool(handle).get("ready", 2) == 0, 90, interval_s=1.0)
            short = _pool(handle)
            report |= {
                "nodes": {"first": first.node_id, "second": second.node_id},
                "placement_before": before,
                "placement_after": after,
                "delivered": len(delivered),
                "delivered_twice": sum(1 for n in delivered.values() if n > 1),
                "under_capacity": {k: short.get(k) for k in ("desired", "running", "ready")},
            }
            stop_supervisor(handle, timeout_s=20)
        sys.stdout.write(json.dumps(report) + "\n")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
