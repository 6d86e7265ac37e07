"""Shared steps of the integration tests: send, collect, and read what the sink delivered."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from infra.client import RequestProducer, ResultCollector
from infra.config import Config
from topics import Request, Result

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


RATE = 250
"""Requests per second a Load sends by default: enough results per 3 s window for a steady measurement."""


class Load:
    """Sends requests at a steady rate and keeps every result with the time it completed."""

    def __init__(self, config: Config, kafka: dict[str, Any], rate: int = RATE, prefix: str = "q") -> None:
        self.producer = RequestProducer(kafka, config.layout)
        self.collector = ResultCollector(kafka, config.layout)
        self.rate, self.prefix = rate, prefix
        self.hard = False
        self._ids = itertools.count()
        self.sent: set[str] = set()
        """Ids of every request sent so far."""
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        await self.producer.start()
        await self.collector.start()
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._collect())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()
        await self.collector.stop()

    async def stop_sending(self) -> None:
        """Stop the traffic and the background polling: ``collector.wait_for`` reads the rest (one
        consumer must not be polled from two tasks at once)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self) -> None:
        tick = 0.05
        while True:
            now = time.time()
            batch = [
                Request(id=f"{self.prefix}-{i}", input=("hard: " if self.hard else "") + f"q {i}", created_at=now)
                for i in itertools.islice(self._ids, max(1, int(self.rate * tick)))
            ]
            await self.producer.send_many(batch)
            self.sent.update(r.id for r in batch)
            await asyncio.sleep(max(0.0, tick - (time.time() - now)))

    async def _collect(self) -> None:
        while True:
            await self.collector.poll()

    def window(self, since: float, until: float) -> list[Result]:
        return [r for r in self.collector.collected.results.values() if since <= r.completed_at < until]
