"""Shared steps of the integration tests: send, collect, and read what the sink delivered."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from infra.client import RequestProducer, ResultCollector
from infra.config import Config
from topics import Request

from .conftest import WAIT_S


def make_requests(n: int, prefix: str = "req") -> list[Request]:
    now = time.time()
    return [Request(id=f"{prefix}-{i}", input=f"query {i}", created_at=now) for i in range(n)]


async def send_and_collect(
    config: Config, kafka: dict[str, Any], requests: list[Request], also: Collection[str] = ()
) -> ResultCollector:
    """Send ``requests`` and wait until they (and the ids in ``also``) have a result or a dead letter."""
    producer = RequestProducer(kafka, config.layout)
    collector = ResultCollector(kafka, config.layout)
    await producer.start()
    await collector.start()
    try:
        await producer.send_many(requests)
        missing = await collector.wait_for({r.id for r in requests} | set(also), WAIT_S)
        assert not missing, f"{len(missing)} requests got no result"
    finally:
        await producer.stop()
        await collector.stop()
    return collector


async def send_and_await_some(
    config: Config, kafka: dict[str, Any], requests: list[Request], collector: ResultCollector, some: int
) -> None:
    """Send ``requests``, start ``collector`` and return once ``some`` results are in: mid-stream."""
    producer = RequestProducer(kafka, config.layout)
    await producer.start()
    await producer.send_many(requests)
    await producer.stop()
    await collector.start()
    deadline = time.monotonic() + WAIT_S
    while len(collector.collected.results) < some and time.monotonic() < deadline:
        await collector.poll()


def delivered_rows(config: Config) -> list[dict[str, Any]]:
    """What the results sink delivered, in order (a last line still being written is not delivered yet)."""
    path = Path(config.results_path)
    if not path.exists():
        return []
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines()]


def delivered_ids(config: Config) -> list[str]:
    return [row["id"] for row in delivered_rows(config)]


async def await_delivered(config: Config, ids: set[str]) -> list[str]:
    """The sink's delivered ids once they include ``ids`` (or the wait bound passed)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        delivered = delivered_ids(config)
        if ids <= set(delivered) or time.monotonic() > deadline:
            return delivered
        await asyncio.sleep(0.2)
