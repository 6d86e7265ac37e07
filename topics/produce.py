"""Produce many records at once: one batch per call and topic, in one partition.

aiokafka's per-record ``send`` costs tens of microseconds of Python each; appending
to a ``create_batch`` batch and sending it whole roughly halves the producer's CPU
per record.

Every batch a partition stores costs the embedded broker again on every later fetch
that returns data from it (Tansu's memory engine walks a partition's batches to find
a fetch's offset: measured, about 1.2 µs of broker CPU per stored batch and data
fetch; ``load_tests/broker_batches.py`` shows the fetch times). Spreading a call's few records over every
partition by key multiplied that cost by the partition count, so all of one call's
records for a topic go to one partition: the one its first key maps to, so that
successive calls still spread over the partitions and their consumers. No stage
needs a request's records in one partition: stages keep no per-request state, and
the results sink drops a repeated result by id under a lock on its results file,
which replicas share (a partition moving to another replica would defeat any
placement by key anyway).

:class:`CoalescingProducer` does the same for many small callers (a gateway's concurrent calls):
records handed over while a produce is in flight go out together in the next one, so under
load they share a batch, and a lone call waits for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

Record = tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]]]
"""(topic, key, value, headers)."""

_partitioner = DefaultPartitioner()


async def produce_all(producer: AIOKafkaProducer, records: Iterable[Record]) -> int:
    """Send every record and wait until the broker acknowledged all of them; return the count."""
    by_topic: dict[str, tuple[int, list[Record]]] = {}
    for record in records:
        topic = record[0]
        if topic not in by_topic:
            every = sorted(await producer.partitions_for(topic))
            by_topic[topic] = (_partitioner(record[1], every, every), [])
        by_topic[topic][1].append(record)
    acks = []
    for topic, (partition, items) in by_topic.items():
        batch = producer.create_batch()
        for _, key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                    raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch")
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)
    return sum(len(items) for _, items in by_topic.values())


class CoalescingProducer:
    """Group commit for many concurrent callers of one producer (each awaits its own records' acks)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._pending: list[tuple[Sequence[Record], asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` with whatever else is waiting; return once the broker acknowledged them."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((records, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await produce_all(self._producer, (record for records, _ in group for record in records))
            except Exception as exc:  # noqa: BLE001 - whatever it is, every caller of the group hears of it
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
