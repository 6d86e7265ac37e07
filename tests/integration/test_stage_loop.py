"""The stage loop against the real broker: coalesced commits and fetch pacing lose nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from topics import TopicLayout
from topics.admin import delete_topics, ensure_topics
from topics.pacing import FetchPacer
from topics.produce import CoalescingProducer, produce_all
from topics.reader import TopicReader
from workers.stage import Handler, Inbound, Outbound, StageLoop

from .conftest import WAIT_S

BUSY_MS, IDLE_MS = 10, 300


class Echo(Handler[bytes]):
    """Copies every record to ``out``."""

    stage = "echo"

    def __init__(self, source: str, out: str) -> None:
        self.source, self.out = source, out

    def topics(self) -> list[str]:
        return [self.source]

    def decode(self, raw: bytes) -> bytes:
        return raw

    async def process(self, batch: Sequence[Inbound[bytes]]) -> list[Outbound]:
        return [
            Outbound(self.out, inbound.record.key.decode() if inbound.record.key else "", inbound.message)
            for inbound in batch
        ]


async def _wait_until(condition: Any, what: str) -> None:
    for _ in range(int(WAIT_S / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} within {WAIT_S:.0f} s")


async def _echo_stage(kafka: dict[str, Any], partitions: int, **options: Any) -> tuple[StageLoop[bytes], str, str, str]:
    """An echo stage on fresh topics of ``partitions`` each: (loop, source, out, group)."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    source, out = f"{ns}.in", f"{ns}.out"
    await ensure_topics(kafka, {source: partitions, out: partitions})
    layout = TopicLayout(ns, ("small",))
    group = f"{ns}.echo"
    loop = StageLoop(
        Echo(source, out),
        kafka,
        layout.dlq,
        group_id=group,
        layout=layout,
        session_timeout_ms=2000,
        fetch_max_wait_ms=BUSY_MS,
        **options,
    )
    return loop, source, out, group


async def _committed(kafka: dict[str, Any], group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(**kafka, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(2)])
    finally:
        await consumer.stop()


async def test_coalesced_commits_cover_every_acknowledged_batch_and_pacing_idles_and_wakes(
    kafka: dict[str, Any],
) -> None:
    loop, source, out, group = await _echo_stage(kafka, 2, commit_interval_ms=60_000)
    loop.pacer = FetchPacer(BUSY_MS, IDLE_MS, idle_after_s=0.5)
    producer = AIOKafkaProducer(**kafka, acks="all")
    await producer.start()
    running = asyncio.create_task(loop.run())
    try:
        await _wait_until(lambda: loop.stats.assigned, "an assignment")
        for round_ in range(3):  # three rounds a moment apart: at least three batches
            for i in range(20):
                await producer.send_and_wait(source, f"v{round_}-{i}".encode(), key=f"k{i}".encode())
            await _wait_until(lambda n=20 * (round_ + 1): loop.stats.committed >= n, "the round acknowledged")
        assert loop.stats.batches >= 3
        assert loop.stats.commits <= 1, "one 60 s interval: at most the first batch's commit went out"

        await _wait_until(lambda: loop.pacer.idle, "the idle wait")
        assert loop._consumer is not None and loop._consumer._fetcher._fetch_max_wait_ms == IDLE_MS
        await producer.send_and_wait(source, b"after-idle", key=b"k0")
        await _wait_until(lambda: loop.stats.committed >= 61, "the record sent while idle")
        assert not loop.pacer.idle and loop._consumer._fetcher._fetch_max_wait_ms == BUSY_MS
    finally:
        loop.request_stop()
        async with asyncio.timeout(WAIT_S):
            stats = await running
        await producer.stop()
    assert stats.consumed == stats.produced == 61 and stats.commit_failures == 0
    assert await _committed(kafka, group, source) == 61, "the stop commits what the interval held back"
    await delete_topics(kafka, [source, out])


async def test_one_produce_call_fills_one_partition_and_successive_calls_spread(kafka: dict[str, Any]) -> None:
    topic = f"t-{uuid.uuid4().hex[:10]}.out"
    await ensure_topics(kafka, {topic: 4})
    producer = AIOKafkaProducer(**kafka, acks="all")
    await producer.start()
    try:
        for call in range(8):
            await produce_all(producer, ((topic, f"c{call}-r{i}".encode(), b"v", ()) for i in range(12)))
    finally:
        await producer.stop()
    partitions_by_call: dict[str, set[int]] = {}
    async with TopicReader(kafka, [topic]) as reader:
        seen: list[Any] = []
        for _ in range(int(WAIT_S / 0.2)):
            seen += await reader.poll()
            if len(seen) >= 96:
                break
    for record in seen:
        partitions_by_call.setdefault(record.key.decode().split("-")[0], set()).add(record.partition)
    assert len(seen) == 96
    assert all(len(parts) == 1 for parts in partitions_by_call.values()), partitions_by_call
    assert len(set().union(*partitions_by_call.values())) > 1, "eight calls all chose one partition"
    await delete_topics(kafka, [topic])


async def test_concurrent_callers_share_produces_and_each_returns_after_its_ack(kafka: dict[str, Any]) -> None:
    topic = f"t-{uuid.uuid4().hex[:10]}.in"
    await ensure_topics(kafka, {topic: 1})
    producer = AIOKafkaProducer(**kafka, acks="all")
    await producer.start()
    batches_sent = 0
    send_batch = producer.send_batch

    async def counting(*args: Any, **kwargs: Any) -> Any:  # the real call, counted
        nonlocal batches_sent
        batches_sent += 1
        return await send_batch(*args, **kwargs)

    producer.send_batch = counting
    sender = CoalescingProducer(producer)
    try:
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(*(sender.send([(topic, f"r{i}".encode(), b"v", ())]) for i in range(40)))
    finally:
        await producer.stop()
    keys: set[bytes | None] = set()
    async with TopicReader(kafka, [topic]) as reader:
        for _ in range(int(WAIT_S / 0.2)):
            keys |= {record.key for record in await reader.poll()}
            if len(keys) >= 40:
                break
    assert keys == {f"r{i}".encode() for i in range(40)}  # every caller's record was acknowledged
    assert batches_sent <= 2, f"40 concurrent calls took {batches_sent} produces"
    await delete_topics(kafka, [topic])


async def test_a_stage_with_partial_batches_polls_at_most_every_poll_interval(kafka: dict[str, Any]) -> None:
    loop, source, out, _ = await _echo_stage(kafka, 1, poll_interval_ms=400)
    producer = AIOKafkaProducer(**kafka, acks="all")
    await producer.start()
    running = asyncio.create_task(loop.run())
    try:
        await _wait_until(lambda: loop.stats.assigned, "an assignment")
        for i in range(40):  # one record every 20 ms for 0.8 s: 40 batches if the stage polled at once
            await producer.send_and_wait(source, f"v{i}".encode(), key=f"k{i}".encode())
            await asyncio.sleep(0.02)
        await _wait_until(lambda: loop.stats.committed >= 40, "every record acknowledged")
    finally:
        loop.request_stop()
        async with asyncio.timeout(WAIT_S):
            stats = await running
        await producer.stop()
    assert stats.consumed == stats.produced == 40
    assert stats.batches <= 6, f"{stats.batches} batches for 0.8 s of traffic at one poll per 0.4 s"
    await delete_topics(kafka, [source, out])


async def test_offsets_read_from_another_broker_are_never_committed_into_this_one(kafka: dict[str, Any]) -> None:
    """A replica that has not yet noticed a restarted broker must not commit its old offsets into the new one."""
    loop, source, out, group = await _echo_stage(kafka, 1)  # one partition, one produced batch: one fetch reads all
    producer = AIOKafkaProducer(**kafka, acks="all", linger_ms=1000)
    await producer.start()
    running = asyncio.create_task(loop.run())
    try:
        await _wait_until(lambda: loop.stats.assigned and not loop._check_broker, "an assignment, checked")
        # as if the positions it is about to read came from a broker that has since been replaced by this one
        loop._broker_id = "a-broker-that-restarted"
        for i in range(20):
            await producer.send(source, f"v{i}".encode())
        await producer.flush()
        await _wait_until(lambda: loop.stats.consumed >= 40, "the records read again from the start")
        await _wait_until(lambda: not loop._pending_commit, "the second reading committed")
    finally:
        loop.request_stop()
        async with asyncio.timeout(WAIT_S):
            stats = await running
        await producer.stop()
    assert stats.consumed == 40, "the first reading was not committed: the rewind read every record again"
    assert await _committed(kafka, group, source) == 20
    await delete_topics(kafka, [source, out])
