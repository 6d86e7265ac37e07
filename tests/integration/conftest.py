"""Session fixtures: one real broker and one real local Ray for all integration tests.

The broker is external when ``TIERFLOW_BOOTSTRAP`` is set, testcontainers' Kafka
when a Docker engine answers, and the embedded Tansu broker otherwise. Every test
uses its own uuid namespace, so topics and consumer groups never collide.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from infra.broker import BrokerProvider, DockerKafka, EmbeddedBroker, ExternalBroker, docker_available, kafka_options
from infra.config import BrokerConfig, Config, parse_config
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray, stop_ray
from topics.admin import delete_topics

WAIT_S = 90.0
"""Upper bound on any single wait in these tests."""


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerProvider]:
    provider: BrokerProvider
    if os.environ.get("TIERFLOW_BOOTSTRAP"):
        provider = ExternalBroker(os.environ["TIERFLOW_BOOTSTRAP"])
    elif docker_available():
        provider = DockerKafka()
    else:
        provider = EmbeddedBroker()
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def bootstrap(broker: BrokerProvider) -> str:
    return broker.start()  # already started: returns the address


@pytest.fixture(scope="session")
def kafka(bootstrap: str) -> dict[str, Any]:
    return kafka_options(BrokerConfig(), bootstrap)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    from infra.config import RayConfig

    started = start_ray(RayConfig(num_cpus=16))
    yield
    stop_ray(started)


def sim_tier(name: str, accuracy: float, seed: int, cost: float, **extra: Any) -> dict[str, Any]:
    """One simulated tier's config table; ``latency_ms`` and other backend options go in ``extra``."""
    options = {"accuracy": accuracy, "cost": cost, "seed": seed}
    if "latency_ms" in extra:
        options["latency_ms"] = extra.pop("latency_ms")
    table = {"name": name, "backend": "simulated", "cost": cost, "threshold": 0.8, "partitions": 2, "num_cpus": 0.1}
    return table | extra | {"options": options}


def simulated_config(tmp_path: Any, **overrides: Any) -> Config:
    """Three simulated tiers at zero latency, a fresh namespace, fast group joins."""
    tiers = [sim_tier("small", 0.6, 1, 0.001), sim_tier("medium", 0.8, 2, 0.01), sim_tier("large", 0.95, 3, 0.1)]
    doc: dict[str, Any] = {
        "namespace": f"t-{uuid.uuid4().hex[:10]}",
        "dataset": "synthetic",
        "results_path": str(tmp_path / "results.jsonl"),
        "broker": {"session_timeout_ms": 2000, "fetch_max_wait_ms": 10},
        "router": {"partitions": 2},
        "verifier": {"partitions": 2},
        "sink": {"partitions": 2},
        "tiers": tiers,
    }
    return parse_config(doc | overrides)


@asynccontextmanager
async def running(config: Config, bootstrap: str, kafka: dict[str, Any]) -> AsyncIterator[Pipeline]:
    """A started pipeline; stopped and its topics deleted afterwards."""
    pipeline = Pipeline(config, bootstrap)
    try:
        await asyncio.wait_for(pipeline.start(ready_timeout_s=WAIT_S), timeout=WAIT_S + 10)
        yield pipeline
    finally:
        await asyncio.wait_for(pipeline.stop(), timeout=WAIT_S)
        await delete_topics(kafka, config.layout.all_topics())
