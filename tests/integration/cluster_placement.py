"""Run in its own process by test_ray_cluster: a two-node Ray cluster on one machine.

Each tier asks for a custom resource that only one node has; the script joins the
cluster by address (as `tierflow up` does with ``ray.address``), streams requests
through the pipeline and prints, as JSON, which node each pool's replicas ran on.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray
from ray.cluster_utils import Cluster

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import RayConfig, parse_config
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray
from topics.messages import Request


async def _run(bootstrap: str, address: str) -> dict[str, object]:
    tiers = [
        {
            "name": "small",
            "backend": "simulated",
            "num_cpus": 0.1,
            "resources": {"small_node": 1},
            "options": {"accuracy": 0.6},
        },
        {
            "name": "large",
            "backend": "simulated",
            "num_cpus": 0.1,
            "resources": {"large_node": 1},
            "threshold": 0.0,
            "options": {"accuracy": 0.9},
        },
    ]
    config = parse_config(
        {
            "namespace": f"cl-{uuid.uuid4().hex[:8]}",
            "tiers": tiers,
            "ray": {"address": address},
            "broker": {"session_timeout_ms": 2000},
            "router": {"num_cpus": 0.1},
            "verifier": {"num_cpus": 0.1},
        }
    )
    pipeline = Pipeline(config, bootstrap)
    await pipeline.start(ready_timeout_s=90)
    try:
        kafka = kafka_options(config.broker, bootstrap)
        producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
        await producer.start()
        await collector.start()
        requests = [Request(f"c{i}", "q", time.time()) for i in range(50)]
        await producer.send_many(requests)
        missing = await collector.wait_for({r.id for r in requests}, 60)
        await producer.stop()
        await collector.stop()
        placement = {
            name: sorted({ray.get(actor.node_id.remote()) for actor in pool.actors})
            for name, pool in pipeline.pools.items()
        }
        return {
            "missing": len(missing),
            "paths": sorted({r.path for r in collector.collected.results.values()}),
            "placement": placement,
        }
    finally:
        await pipeline.stop()


def main() -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}, "node_ip_address": "127.0.0.1"}
    )
    small = cluster.add_node(num_cpus=2, resources={"small_node": 1}, node_ip_address="127.0.0.1")
    large = cluster.add_node(num_cpus=2, resources={"large_node": 1}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    try:
        start_ray(RayConfig(address=cluster.address))
        with EmbeddedBroker(log_dir=tempfile.mkdtemp()) as bootstrap:
            report = asyncio.run(_run(bootstrap, cluster.address))
        report["nodes"] = {"small_node": small.node_id, "large_node": large.node_id}
        sys.stdout.write(json.dumps(report) + "\n")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
