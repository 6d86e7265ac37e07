"""The one group-less topic reader: every reader sees every record, and nothing is committed.

Consumer groups share a topic's records among their members; some readers need all
of them instead: each router and verifier follows every policy update, the budget
controller follows control and results, clients collect results, ``status`` reads
windows of a topic. They all assign partitions themselves (no group, no rebalance,
no commits) through this class, so "read to the end", "read a range" and "follow
forever" are written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from topics.admin import cluster_id
from topics.errors import BrokerError
from topics.gaps import GapGuard
from topics.pacing import FetchPacer

log = logging.getLogger("tierflow.reader")
Record: TypeAlias = ConsumerRecord[bytes, bytes]
RETRY_AFTER_S = 0.5
"""Pause after a failed fetch (broker away, topic being rebuilt) before the next one."""


async def stop_quietly(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Stop a client; aiokafka can leak the CancelledError of its own background fetch task."""
    try:
        with contextlib.suppress(KafkaError):
            await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves: let it through


class TopicReader:
    """Reads ``topics`` from their beginning or their end, with no consumer group.

    ``partitions`` gives each topic's partition count when the caller knows it (the
    deployment's own topics); otherwise it is asked from the broker, and a topic the
    broker does not have is a :class:`BrokerError` naming it. ``start()`` and
    ``stop()`` are safe to call twice. After 5 s without a record, fetches wait
    ``idle_fetch_wait_ms`` instead of ``fetch_max_wait_ms`` (``topics/pacing.py``).
    """

    def __init__(
        self,
        kafka: Mapping[str, Any],
        topics: Sequence[str],
        *,
        start_at: Literal["beginning", "end"] = "beginning",
        partitions: Mapping[str, int] | None = None,
        fetch_max_wait_ms: int = 20,
        idle_fetch_wait_ms: int = 200,
    ) -> None:
        self.topics = tuple(topics)
        self.start_at = start_at
        self.assigned: list[TopicPartition] = []
        self._counts = partitions
        self._options = {
            # A reader without a client id of its own is named by what it reads (the broker's logs, a proxy).
            "client_id": "reader:" + "+".join(sorted({topic.rsplit(".", 1)[-1] for topic in self.topics})),
            **kafka,
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest" if start_at == "beginning" else "latest",
            "fetch_max_wait_ms": fetch_max_wait_ms,
        }
        self._client: AIOKafkaConsumer | None = None
        self._pacer = FetchPacer(fetch_max_wait_ms, idle_fetch_wait_ms)
        self.gaps = GapGuard()

    @property
    def _consumer(self) -> AIOKafkaConsumer:
        if self._client is None:
            raise RuntimeError("TopicReader used before start()")
        return self._client

    async def start(self) -> None:
        """Connect and assign; the client is made here, inside the event loop that will use it."""
        if self._client is not None:
            return
        self._client = AIOKafkaConsumer(**self._options)
        try:
            await self._client.start()
            self.assigned = [TopicPartition(topic, p) for topic in self.topics for p in await self._partitions(topic)]
            self._consumer.assign(self.assigned)
            if self.start_at == "beginning":
                await self._consumer.seek_to_beginning(*self.assigned)
            else:
                await self._consumer.seek_to_end(*self.assigned)
        except KafkaError as exc:
            await self.stop()
            raise BrokerError(f"cannot read {', '.join(self.topics)}: {exc}") from exc
        except BrokerError:
            await self.stop()
            raise

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await stop_quietly(client)

    async def __aenter__(self) -> TopicReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _partitions(self, topic: str) -> list[int]:
        if self._counts is not None and topic in self._counts:
            return list(range(self._counts[topic]))
        parts = self._consumer.partitions_for_topic(topic)
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(topic)
        if not parts:
            raise BrokerError(f"topic {topic} does not exist")
        return sorted(parts)

    async def poll(self, timeout_ms: int = 200, max_records: int = 1000) -> list[Record]:
        """What is available now (waiting up to ``timeout_ms``), in order within each partition."""
        batches = self.gaps.admit(
            self._consumer, await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        )
        records = [record for records in batches.values() for record in records]
        self._pacer.observe(self._consumer, len(records))
        return records

    async def follow(self, handle: Callable[[Record], Awaitable[Any] | Any], timeout_ms: int = 200) -> None:
        """Hand every record to ``handle`` until cancelled; a failed fetch is logged and retried."""
        while True:
            try:
                records = await self.poll(timeout_ms, max_records=2000)
            except KafkaError as exc:  # the broker is away: keep what we have and look again
                log.warning("reading %s failed: %r", ", ".join(self.topics), exc)
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            for record in records:
                outcome = handle(record)
                if asyncio.iscoroutine(outcome):
                    await outcome

    async def read_to_end(self, timeout_ms: int = 100) -> AsyncIterator[list[Record]]:
        """Batches from the current positions up to the end offsets seen at the start.

        Tansu's reported end can run ahead of the records a fetch returns yet, so a
        partition counts as done only when its position reached that end.
        """
        ends = await self._consumer.end_offsets(self.assigned)
        behind = {tp for tp in self.assigned if await self._consumer.position(tp) < ends[tp]}
        while behind:
            batches = self.gaps.admit(
                self._consumer, await self._consumer.getmany(*behind, timeout_ms=timeout_ms, max_records=5000)
            )
            batch = [record for records in batches.values() for record in records]
            if batch:
                yield batch
            behind = {tp for tp in behind if await self._consumer.position(tp) < ends[tp]}

    async def end_offsets(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        wanted = list(self.assigned if partitions is None else partitions)
        return {tp: int(offset) for tp, offset in (await self._consumer.end_offsets(wanted)).items()}

    async def beginning_offsets(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        wanted = list(self.assigned if partitions is None else partitions)
        return {tp: int(offset) for tp, offset in (await self._consumer.beginning_offsets(wanted)).items()}

    async def high_watermarks(
        self, partitions: Iterable[TopicPartition], timeout_s: float = 5.0
    ) -> dict[TopicPartition, int]:
        """The end of each partition as a fetch reports it (its high watermark); reassigns, as :meth:`read_ranges`.

        Tansu's ListOffsets answer is no end to count by: with several batches in a partition it
        reported 1 where a fetch found 160 records. Every fetch response carries the true high
        watermark, so one small fetch per partition, from just below the reported end, settles
        it. A partition no fetch answered for within ``timeout_s`` keeps the reported end.
        """
        wanted = list(partitions)
        if not wanted:
            return {}
        reported = await self.end_offsets(wanted)
        beginnings = await self.beginning_offsets(wanted)
        self._consumer.assign(wanted)
        self.gaps.forget(wanted)
        for tp in wanted:
            self._consumer.seek(tp, max(beginnings[tp], reported[tp] - 1))
        marks: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(marks) < len(wanted) and time.monotonic() < deadline:
            await self._consumer.getmany(*(tp for tp in wanted if tp not in marks), timeout_ms=100, max_records=1)
            marks |= {tp: mark for tp in wanted if (mark := self._consumer.highwater(tp)) is not None}
        self._consumer.pause(*wanted)
        return {tp: marks.get(tp, reported[tp]) for tp in wanted}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.gaps.forget([partition])
        self._consumer.seek(partition, offset)

    async def rewind(self) -> None:
        """Read every partition again from its beginning (the broker lost its data), new ones included."""
        await self.take_new_partitions()
        self.gaps.forget()
        await self._consumer.seek_to_beginning(*self.assigned)

    async def take_new_partitions(self) -> list[TopicPartition]:
        """Assign, from their beginning, partitions the broker's metadata shows beyond those assigned.

        A rebuilt topic can have more partitions than before: a client's metadata request for a
        topic that is missing makes the broker create it with its default count (Tansu: 4) before
        the deployment's own creation runs. Records keyed there would go unread by an assignment
        made at start. Asks the broker (one metadata request: a consumer's cached metadata may be
        minutes old); returns the partitions added.
        """
        added = []
        found = await self.topic_partitions(self.topics)
        for topic in self.topics:
            known = {tp.partition for tp in self.assigned if tp.topic == topic}
            added += [tp for tp in found.get(topic, []) if tp.partition not in known]
        if added:
            self.assigned = self.assigned + added
            self._consumer.assign(self.assigned)
            await self._consumer.seek_to_beginning(*added)
        return added

    async def cluster_id(self) -> str:
        """The broker's cluster id (see ``topics.admin.cluster_id``)."""
        return await cluster_id(self._consumer._client)

    async def read_ranges(
        self, ranges: Mapping[TopicPartition, tuple[int, int | None]], ends: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, list[Record]]:
        """Records of each partition from ``start`` up to ``stop`` (``None``: to ``ends``, keeping whatever
        else its last batch holds); the reader is then paused until the next read."""
        wanted = list(ranges)
        self._consumer.assign(wanted)
        self.gaps.forget(wanted)
        for tp in wanted:
            self._consumer.seek(tp, ranges[tp][0])
        out: dict[TopicPartition, list[Record]] = {tp: [] for tp in wanted}

        def done(tp: TopicPartition, position: int) -> bool:
            stop = ranges[tp][1]
            return position >= (ends[tp] if stop is None else stop)

        behind = {tp for tp in wanted if not done(tp, ranges[tp][0])}
        while behind:
            for tp, records in (await self._consumer.getmany(*behind, timeout_ms=200)).items():
                stop = ranges[tp][1]
                out[tp] += [r for r in records if stop is None or r.offset < stop]
            behind = {tp for tp in behind if not done(tp, await self._consumer.position(tp))}
        self._consumer.pause(*wanted)  # no background fetching between reads
        return out

    async def topic_partitions(self, topics: Iterable[str]) -> dict[str, list[TopicPartition]]:
        """The partitions each topic has on the broker now (``{}`` entries for topics it lacks)."""
        cluster = await self._consumer._client.fetch_all_metadata()
        return {
            topic: [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
            for topic in topics
        }
