"""Client side of a deployment: submit requests and collect their results.

The collector reads the results and dead-letter topics from the beginning with no
consumer group and keeps the first result per request id: the same idempotence
the results sink has, so a repeated hop never shows a client two answers. It
counts raw duplicates separately so the repeats stay visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from topics.errors import BrokerError, DecodeError
from topics.messages import Answer, DeadLetter, Request, Result
from topics.names import TopicLayout
from workers.produce import produce_all
from workers.stage import PRODUCER_BATCH_BYTES
from workers.telemetry import new_trace_headers

log = logging.getLogger("tierflow.client")


async def _stop_quietly(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Stop a client; aiokafka can leak the CancelledError of its own background fetch task."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves: let it through


class RequestProducer:
    """Produces Requests keyed by id, each starting its own trace."""

    def __init__(self, kafka: dict[str, Any], layout: TopicLayout) -> None:
        self.layout = layout
        self._producer = AIOKafkaProducer(**kafka, acks="all", linger_ms=2, max_batch_size=PRODUCER_BATCH_BYTES)

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise BrokerError(f"cannot reach the broker: {exc}") from exc

    async def stop(self) -> None:
        await _stop_quietly(self._producer)

    async def send_many(self, requests: Iterable[Request]) -> None:
        """Produce ``requests`` and wait until the broker acknowledged every one."""
        topic = self.layout.requests
        await produce_all(self._producer, ((topic, r.id.encode(), r.to_wire(), new_trace_headers()) for r in requests))

    async def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Produce arbitrary bytes to the requests topic (for poison-record tests and tools)."""
        await (await self._producer.send(self.layout.requests, value, key=key))


@dataclass
class Collected:
    results: dict[str, Result] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_ids: set[str] = field(default_factory=set)
    answers: dict[str, Answer] = field(default_factory=dict)
    """Distinct answers by answer id (only with ``include_answers``)."""
    raw_duplicates: int = 0
    undecodable: int = 0


class ResultCollector:
    """Tails ``results`` and ``dlq`` (and optionally ``answers``) from offset 0; first result per id wins."""

    def __init__(
        self, kafka: dict[str, Any], layout: TopicLayout, *, include_answers: bool = False, fetch_max_wait_ms: int = 10
    ) -> None:
        self.layout = layout
        self.topics = [layout.results, layout.dlq] + ([layout.answers] if include_answers else [])
        self.broker_resets = 0
        """How often the topics were found emptied under us (a memory broker that restarted)."""
        self._read_upto: dict[TopicPartition, int] = {}
        self._next_reset_check = 0.0
        self.collected = Collected()
        self._consumer = AIOKafkaConsumer(
            **kafka,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
        )

    async def start(self) -> None:
        try:
            await self._consumer.start()
            partitions = [
                TopicPartition(topic, p)
                for topic in self.topics
                for p in self._consumer.partitions_for_topic(topic) or await self._partitions(topic)
            ]
            self._consumer.assign(partitions)
            await self._consumer.seek_to_beginning(*partitions)
        except (KafkaError, BrokerError) as exc:
            await self._consumer.stop()
            raise BrokerError(f"cannot read results: {exc}") from exc

    async def _partitions(self, topic: str) -> set[int]:
        await self._consumer._client.force_metadata_update()
        parts = self._consumer.partitions_for_topic(topic)
        if not parts:
            raise BrokerError(f"topic {topic} does not exist")
        return parts

    async def stop(self) -> None:
        await _stop_quietly(self._consumer)

    async def poll(self, timeout_ms: int = 200) -> list[str]:
        """Read what is available; return the request ids that got their first result or dead letter."""
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for tp, records in batches.items():
            self._read_upto[tp] = max(self._read_upto.get(tp, 0), records[-1].offset + 1)
        settled = (self._take(tp.topic, record.value or b"") for tp, records in batches.items() for record in records)
        return [request_id for request_id in settled if request_id is not None]

    async def lost_broker_data(self) -> bool:
        """True (once per event) when a partition now ends before what we already read: the data is gone."""
        if time.monotonic() < self._next_reset_check:
            return False
        self._next_reset_check = time.monotonic() + 1.0
        try:
            ends = await self._consumer.end_offsets(list(self._consumer.assignment()))
        except KafkaError:
            return False  # topics missing or broker away right now; look again later
        if any(ends.get(tp, 0) < upto for tp, upto in self._read_upto.items()):
            self.broker_resets += 1
            self._read_upto.clear()
            return True
        return False

    def _take(self, topic: str, value: bytes) -> str | None:
        c = self.collected
        try:
            if topic == self.layout.dlq:
                letter = DeadLetter.from_wire(value)
                c.dead_letters.append(letter)
                rid = letter.request_id
                if rid is None or rid in c.dead_ids or rid in c.results:
                    return None
                c.dead_ids.add(rid)
                return rid
            if topic == self.layout.answers:
                answer = Answer.from_wire(value)
                c.answers.setdefault(answer.answer_id, answer)
                return None
            result = Result.from_wire(value)
        except DecodeError:
            c.undecodable += 1
            return None
        if result.request_id in c.results:
            c.raw_duplicates += 1
            return None
        c.results[result.request_id] = result
        return None if result.request_id in c.dead_ids else result.request_id

    async def wait_for(
        self,
        ids: set[str],
        timeout_s: float,
        on_progress: Callable[[int], None] | None = None,
        stop: asyncio.Event | None = None,
        resubmit: Callable[[set[str]], Awaitable[None]] | None = None,
    ) -> set[str]:
        """Poll until every id has a result or a dead letter, the timeout, or ``stop``; return the missing ids.

        With ``resubmit``, a broker that lost its data is noticed and the ids still missing are handed to
        it, so no request the client holds is silently dropped.
        """
        deadline = time.monotonic() + timeout_s
        missing = set(ids) - self.collected.results.keys() - self.collected.dead_ids
        while True:
            settled = await self.poll()
            if on_progress and settled:
                on_progress(len(settled))
            missing.difference_update(settled)
            if resubmit is not None and missing and await self.lost_broker_data():
                log.warning("the broker lost its data: resubmitting %d unanswered requests", len(missing))
                await resubmit(set(missing))
            if not missing or time.monotonic() > deadline or (stop is not None and stop.is_set()):
                return missing
