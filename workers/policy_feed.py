"""Routers and verifiers follow the control topic and apply the newest PolicyUpdate.

No consumer group: every replica reads every update (a group would hand each
update to one replica only). ``start()`` reads the topic up to its end before the
stage takes its first batch, so a restarted replica never decides with an older
version than its peers; afterwards a background task follows the topic and the
stage picks up ``current`` at its next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from topics.control import PolicyUpdate, decode_control
from topics.errors import DecodeError
from workers.stage import Handler

log = logging.getLogger("tierflow.policy_feed")
M = TypeVar("M")
CATCH_UP_TIMEOUT_S = 10.0


async def read_to_end(
    consumer: AIOKafkaConsumer, partition: TopicPartition, timeout_ms: int = 100
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Batches of ``partition`` from the consumer's position up to the end offset seen at the start
    (Tansu's end can lag its last records, so it also stops only on an empty fetch)."""
    end = (await consumer.end_offsets([partition]))[partition]
    while True:
        batch = (await consumer.getmany(partition, timeout_ms=timeout_ms, max_records=5000)).get(partition, [])
        if batch:
            yield batch
        elif await consumer.position(partition) >= end:
            return


class PolicyFeed:
    """The newest :class:`PolicyUpdate` on ``topic`` (``None`` until the controller published one)."""

    def __init__(self, kafka: dict[str, Any], topic: str) -> None:
        self.kafka = kafka
        self.partition = TopicPartition(topic, 0)
        self.current: PolicyUpdate | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self.kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50
        )
        await self._consumer.start()
        self._consumer.assign([self.partition])
        await self._consumer.seek_to_beginning(self.partition)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._catch_up(), timeout=CATCH_UP_TIMEOUT_S)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._consumer.stop()
            self._consumer = None

    async def _catch_up(self) -> None:
        assert self._consumer is not None
        async for batch in read_to_end(self._consumer, self.partition):
            self._take(batch)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(self.partition, timeout_ms=200, max_records=1000)
            except KafkaError as exc:  # the broker is away: keep the newest update and retry
                log.warning("policy feed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            self._take(batches.get(self.partition, []))

    def _take(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            try:
                message = decode_control(record.value or b"")
            except DecodeError:
                continue  # the controller answers bad commands; a stage only looks for updates
            if isinstance(message, PolicyUpdate) and (self.current is None or message.version > self.current.version):
                self.current = message


class FollowsPolicy(Handler[M]):
    """A stage that applies policy updates (router, verifier): its feed lives as long as the stage."""

    feed: PolicyFeed | None = None

    async def start(self) -> None:
        if self.feed is not None:
            await self.feed.start()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
