"""Produce many records at once: one batch per partition instead of one send per record.

aiokafka's per-record ``send`` costs tens of microseconds of Python each; appending
to a ``create_batch`` batch and sending it whole roughly halves the producer's CPU
per record. Records keep the default partitioner's key → partition mapping, so all
hops of one request still land on one partition, in order.
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
    by_partition: dict[tuple[str, int], list[Record]] = {}
    partitions: dict[str, list[int]] = {}
    for record in records:
        topic, key = record[0], record[1]
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        every = partitions[topic]
        partition = _partitioner(key, every, every)
        by_partition.setdefault((topic, partition), []).append(record)
    acks = []
    for (topic, partition), items in by_partition.items():
        batch = producer.create_batch()
        for _, key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                    raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch")
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)
    return sum(len(items) for items in by_partition.values())
