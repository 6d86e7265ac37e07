"""The one stage loop every stage runs: consume a batch, decide, produce, await acks, commit.

Delivery is at-least-once: offsets are committed only after everything the batch
produced is acknowledged, so a crash repeats a hop and never loses one (sinks are
idempotent on request id). In-flight work is bounded by ``max_batch``: the loop
does not fetch the next batch before the current one is acknowledged. A record that
cannot be decoded or validated becomes one dead letter and the offset moves on.

Commits are coalesced: acknowledged offsets are committed at most every
``commit_interval_ms`` (and always before partitions move, at a rewind and at the
stop), so at a few dozen batches a second a stage pays the broker one commit per
interval instead of one per batch; a crash redoes at most that interval's records.

Polls are paced too: after a batch that was not full, the next poll waits until
``poll_interval_ms`` after this one. The embedded broker pays for every fetch that
returns data in proportion to the batches the partition holds, so a stage that
polled again at once at a few hundred requests a second fetched (and produced) a
handful of records at a time and kept the broker busy; waiting a few milliseconds
lets records gather into fewer, larger batches, at most that wait per hop. Full
batches (a backlog) are polled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from topics.admin import cluster_id
from topics.errors import BrokerError, DecodeError
from topics.gaps import GapGuard
from topics.messages import DeadLetter
from topics.names import TopicLayout
from topics.pacing import FetchPacer
from topics.produce import produce_all
from topics.wire import Message
from workers.telemetry import Headers, StageTelemetry, passthrough, stage_span, tracing_enabled

log = logging.getLogger("tierflow.stage")
M = TypeVar("M")

PRODUCER_BATCH_BYTES = 512 * 1024
"""One produce batch per partition per stage batch: big enough for ``max_batch`` typical records."""
PROCESS_ATTEMPTS = 3
"""A batch whose processing raises is retried this often, then dead-lettered record by record."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """A record a stage produces."""

    topic: str
    key: str
    value: bytes
    headers: Headers = field(default_factory=list)
    message: Message | None = field(default=None, compare=False, repr=False)
    """What ``value`` encodes, when the stage has it: telemetry counts from it instead of decoding again."""


@dataclass(frozen=True, slots=True)
class Inbound(Generic[M]):
    """A decoded, valid input record and the trace headers its outputs must carry."""

    message: M
    record: ConsumerRecord[bytes, bytes]
    headers: Headers


class Handler(ABC, Generic[M]):
    """What a stage does; the loop owns Kafka, batching, DLQ and commits."""

    stage: str = "stage"

    @abstractmethod
    def topics(self) -> list[str]:
        """Topics this stage consumes."""

    async def start(self) -> None:
        """Load what the handler needs (model weights…) before the first batch."""

    async def stop(self) -> None:
        """Release what ``start`` took."""

    @abstractmethod
    def decode(self, raw: bytes) -> M:
        """Decode and validate one record value; raise DecodeError on bad input."""

    @abstractmethod
    async def process(self, batch: Sequence[Inbound[M]]) -> list[Outbound]:
        """Decide for a batch of valid records; return everything to produce."""


@dataclass
class StageStats:
    consumed: int = 0
    committed: int = 0
    """Records whose outputs are acknowledged and whose offsets are committed or due in the next coalesced commit
    (or that were given up to a rebalance); ``consumed - committed`` is in flight."""
    commits: int = 0
    """Commit requests sent: at most one per ``commit_interval_ms`` however many batches."""
    produced: int = 0
    dead_letters: int = 0
    batches: int = 0
    commit_failures: int = 0
    send_failures: int = 0
    process_failures: int = 0
    holes_refetched: int = 0
    """Fetches that skipped records and were read again (``topics/gaps.py``)."""
    holes_accepted: int = 0
    served: int = 0
    """Records of the batches finished (``consumed`` counts a batch when it starts)."""
    busy_s: float = 0.0
    """Seconds spent on those batches (decode, process, produce): ``served / busy_s`` is what one replica
    serves per second of work, the service rate the autoscaler sizes queue-time targets with."""
    assigned: list[tuple[str, int]] = field(default_factory=list)


class _DrainOnRevoke(ConsumerRebalanceListener):
    """Let the batch in flight finish (and commit) before partitions move to another member."""

    def __init__(self, loop: StageLoop[Any]) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loop.idle.wait(), timeout=self.loop.drain_timeout_s)
        await self.loop.flush_commits()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.gaps.forget()  # positions come from commits now, not from what this member read
        self.loop.stats.assigned = sorted((tp.topic, tp.partition) for tp in self.loop.assignment())
        # A broker that lost its data makes every member rejoin: look before the next fetch (not here:
        # seeking waits for the fetcher, which a rebalance in progress may hold up)
        self.loop.request_broker_check(assigned=True)


def resident_mb() -> float:
    """This process's resident memory in MB (Linux ``/proc``; 0 where it cannot be read)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class StageLoop(Generic[M]):
    """Runs one :class:`Handler` against Kafka until ``request_stop()`` (safe to call twice)."""

    def __init__(
        self,
        handler: Handler[M],
        kafka: dict[str, Any],
        dlq_topic: str,
        *,
        group_id: str,
        layout: TopicLayout,
        max_batch: int = 64,
        session_timeout_ms: int = 3000,
        fetch_max_wait_ms: int = 10,
        idle_fetch_wait_ms: int = 0,
        commit_interval_ms: int = 0,
        poll_interval_ms: int = 0,
        max_payload_bytes: int = 1 << 20,
        max_rss_mb: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.handler = handler
        self.kafka = kafka
        self.dlq_topic = dlq_topic
        self.group_id = group_id
        self.max_batch = max_batch
        self.session_timeout_ms = session_timeout_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.pacer = FetchPacer(fetch_max_wait_ms, idle_fetch_wait_ms)
        self.gaps = GapGuard()
        self.commit_interval_s = commit_interval_ms / 1000
        self._pending_commit: dict[TopicPartition, int] = {}
        """Acknowledged offsets not yet committed (coalesced up to ``commit_interval_ms``)."""
        self._last_commit = 0.0
        self.poll_interval_s = poll_interval_ms / 1000
        self._next_poll = 0.0
        """Monotonic time before which a stage whose last batch was not full does not poll again."""
        self.max_payload_bytes = max_payload_bytes
        self.max_rss_mb = max_rss_mb
        self.over_memory = False
        """Set when the loop stopped because the process passed ``max_rss_mb``."""
        self.drain_timeout_s = session_timeout_ms / 1000
        self.clock = clock
        self.stats = StageStats()
        self.idle = asyncio.Event()
        self.idle.set()
        self._stopping = asyncio.Event()
        self._broker_id = ""
        """Cluster id of the broker the consumer's positions and commits refer to ("" until known)."""
        self._check_broker = False
        self._assigned_since_check = False
        self._rejoin_pending = False
        """A new broker was noticed outside an assignment: the next assignment rewinds again."""
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.telemetry = StageTelemetry(handler.stage, layout)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer else set()

    async def run(self) -> StageStats:
        """Start clients, loop until stopped, then commit, leave the group and close."""
        await self.handler.start()
        self._producer = AIOKafkaProducer(
            **self.kafka,
            acks="all",
            linger_ms=1,
            max_batch_size=PRODUCER_BATCH_BYTES,
            max_request_size=max(self.max_payload_bytes, PRODUCER_BATCH_BYTES) + 65536,
        )
        self._consumer = AIOKafkaConsumer(
            **self.kafka,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.session_timeout_ms // 6),
            rebalance_timeout_ms=max(self.session_timeout_ms, 5000),
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_poll_interval_ms=300_000,
        )
        try:
            await self._producer.start()
            self._consumer.subscribe(self.handler.topics(), listener=_DrainOnRevoke(self))
            await self._consumer.start()
            with contextlib.suppress(KafkaError, BrokerError):
                self._broker_id = self._broker_id or await cluster_id(self._consumer._client)
            self.telemetry.open()
            while not self._stopping.is_set():
                await self._poll_once()
        finally:
            await self._close()
            self.telemetry.export_last()
            self.telemetry.close()
        return self.stats

    def request_broker_check(self, assigned: bool = False) -> None:
        """Look at the broker before the next fetch, and rewind if it is a new one (see :meth:`rewind_if_new_broker`).

        Asked by the watchdog, and at every assignment (``assigned``); cheap to ask often: a
        replica that already rewound for that broker does nothing.
        """
        self._check_broker = True
        self._assigned_since_check |= assigned

    async def rewind_if_new_broker(self) -> bool:
        """Read every assigned partition from its beginning when the broker is a new one; True if it did.

        A memory broker that restarted has rebuilt topics whose offsets start at 0 again,
        while this consumer may still hold positions from the old one, and, before it
        rejoined, may even have committed them into the new broker's empty group: fetching
        from those would silently skip every record below them. The cluster id changes
        only with a new broker. Noticed between assignments (the watchdog asked while this
        replica still had its old membership), the assignment that follows — the rejoin,
        whose positions come from such commits — rewinds once more. Every rewind commits
        the beginnings at once, so no stale commit outlives it. Records read twice are the
        idempotent sink's to drop.
        """
        assert self._consumer is not None
        at_assignment, self._assigned_since_check = self._assigned_since_check, False
        try:
            current = await self._cluster_id()
        except (KafkaError, BrokerError, TimeoutError):
            self._check_broker = True  # unreachable now: look again before a later fetch
            self._assigned_since_check |= at_assignment
            return False
        # A rebuilt topic may have more partitions than before (Tansu creates one a client asked for
        # with 4); only the group's leader watches partition counts, on its metadata, which ages for
        # 5 minutes: until it is refreshed, the new partitions have no reader. Every member refreshes
        # at every check (the watchdog asks after it rebuilt the topics), so the leader rejoins the
        # group over the partitions there are now.
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(self._consumer._client.force_metadata_update(), timeout=self.drain_timeout_s)
        if not self._broker_id or not current:
            self._broker_id = self._broker_id or current
            return False
        new_broker = current != self._broker_id
        if not new_broker and not (self._rejoin_pending and at_assignment):
            return False
        assigned = self._consumer.assignment()
        if new_broker:
            log.warning("%s: the broker is a new one (cluster id %s): reading from the start", self.group_id, current)
            self._broker_id = current
            self._rejoin_pending = not at_assignment
        elif at_assignment:
            self._rejoin_pending = False
        self._pending_commit.clear()  # offsets of the old broker: never to be committed into the new one
        if not assigned:
            self._rejoin_pending = True  # nothing to rewind yet: the next assignment does it
            return False
        self.gaps.forget()
        try:
            await self._consumer.seek_to_beginning(*assigned)
        except KafkaError:  # the assignment moved meanwhile: the rebalance's own assignment rewinds
            self._rejoin_pending = True
            return False
        with contextlib.suppress(KafkaError):
            await self._consumer.commit({tp: await self._consumer.position(tp) for tp in assigned})
        return True

    async def _cluster_id(self) -> str:
        """The broker's cluster id, within the drain timeout (raises as :func:`cluster_id` or TimeoutError)."""
        assert self._consumer is not None
        return await asyncio.wait_for(cluster_id(self._consumer._client), timeout=self.drain_timeout_s)

    async def _broker_unchanged(self) -> bool:
        """Whether the broker is still the one whose offsets this replica is about to commit.

        A replica that has not yet noticed a restarted memory broker holds offsets of the old
        one; committed into the new broker's group, they outlive the rewinds of the members that
        did notice (this broker takes a commit from a member of a generation it never saw), and
        the partition's next owner starts above records no one read. That was the rare skip of
        the restart test under load. One metadata round trip per commit interval rules it out;
        offsets not committed are redone, as after any failed commit.
        """
        if not self._broker_id:
            return True
        try:
            current = await self._cluster_id()
        except (KafkaError, BrokerError, TimeoutError):
            return False  # unreachable: the commit would fail as well
        if current and current != self._broker_id:
            self._check_broker = True  # rewind before the next fetch
            return False
        return True

    def request_stop(self) -> None:
        """Stop fetching; the batch in flight finishes and commits first. Safe to call twice."""
        self._stopping.set()

    async def _close(self) -> None:
        await self.flush_commits()
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        with contextlib.suppress(KafkaError):
            if consumer is not None:
                await consumer.stop()  # leaves the group so partitions move at once
        with contextlib.suppress(KafkaError):
            if producer is not None:
                await producer.stop()
        await self.handler.stop()

    async def _poll_once(self) -> None:
        assert self._consumer is not None
        if self._check_broker:
            self._check_broker = False
            await self.rewind_if_new_broker()
        if (pause := self._next_poll - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=pause)
        fetch = asyncio.ensure_future(self._consumer.getmany(timeout_ms=200, max_records=self.max_batch))
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not fetch.done():
            fetch.cancel()
            return
        if self.telemetry.lag_due():
            await self.telemetry.refresh_lag(self._consumer)
        records = [record for batch in self.gaps.admit(self._consumer, fetch.result()).values() for record in batch]
        self.stats.holes_refetched, self.stats.holes_accepted = self.gaps.refetches, self.gaps.accepted
        self.pacer.observe(self._consumer, len(records))
        if 0 < len(records) < self.max_batch:
            self._next_poll = time.monotonic() + self.poll_interval_s
        if records:
            self.idle.clear()
            try:
                await self._handle_batch(records)
            finally:
                self.idle.set()
        if self._pending_commit and time.monotonic() - self._last_commit >= self.commit_interval_s:
            await self.flush_commits()

    async def _handle_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        started = time.perf_counter()
        self.stats.consumed += len(records)
        self.stats.batches += 1
        good: list[tuple[ConsumerRecord[bytes, bytes], M]] = []
        out: list[Outbound] = []
        for record in records:
            try:
                good.append((record, self._decode(record)))
            except DecodeError as exc:
                out.append(self._dead_letter(record, exc))
        out += await self._process_with_spans(good)
        try:
            await self._send(out)
        except KafkaError as exc:
            # Not acknowledged (broker away, topic gone): never commit; read the batch again and redo it.
            self.stats.send_failures += 1
            self.stats.busy_s += time.perf_counter() - started
            self.stats.served += len(records)
            log.warning("stage %s: produce failed, batch will be redone: %r", self.handler.stage, exc)
            self._seek_back(records)
            await asyncio.sleep(0.5)
            return
        elapsed = time.perf_counter() - started
        self.stats.busy_s += elapsed
        self.stats.served += len(records)
        self.telemetry.batch_done(records, out, elapsed)
        self._acknowledged(records)
        if self.max_rss_mb and (rss := resident_mb()) > self.max_rss_mb:
            log.warning("stage %s: %.0f MB resident > max_rss_mb %d: leaving", self.handler.stage, rss, self.max_rss_mb)
            self.over_memory = True
            self.request_stop()

    def _seek_back(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._consumer is not None
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        self.gaps.forget(list(first))
        for tp, offset in first.items():
            if tp in self._consumer.assignment():
                self._consumer.seek(tp, offset)

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> M:
        value = record.value or b""
        if len(value) > self.max_payload_bytes:
            raise DecodeError("too_large", f"{len(value)} bytes > limit {self.max_payload_bytes}")
        return self.handler.decode(value)

    async def _process_with_spans(self, good: list[tuple[ConsumerRecord[bytes, bytes], M]]) -> list[Outbound]:
        """Run the handler with one span per record open (when a tracer records spans)."""
        if not good:
            return []
        if not tracing_enabled():
            # Nothing records spans: pass each record's trace context on unchanged (the trace id survives).
            return await self._process_retrying([Inbound(m, r, passthrough(r.headers)) for r, m in good])
        with contextlib.ExitStack() as spans:
            batch = [
                Inbound(message, record, spans.enter_context(stage_span(self.handler.stage, record)))
                for record, message in good
            ]
            # Escalate spans open while their verify span is still open, so they nest under it.
            return self.telemetry.trace_escalations(await self._process_retrying(batch))

    async def _process_retrying(self, batch: list[Inbound[M]]) -> list[Outbound]:
        """Retry a failing batch a few times, then dead-letter its records one by one."""
        for attempt in range(1, PROCESS_ATTEMPTS + 1):
            try:
                return await self.handler.process(batch)
            except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the loop
                self.stats.process_failures += 1
                log.warning("stage %s: batch failed (attempt %d): %r", self.handler.stage, attempt, exc)
                failure = exc
                await asyncio.sleep(0.1 * attempt)
        return [self._dead_letter(inbound.record, failure) for inbound in batch]

    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: Exception) -> Outbound:
        self.stats.dead_letters += 1
        letter = DeadLetter.for_record(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage=self.handler.stage,
            key=record.key,
            value=record.value,
            error=error,
            at=self.clock(),
        )
        log.info("dead letter from %s[%d]@%d: %s", record.topic, record.partition, record.offset, letter.reason)
        return Outbound(self.dlq_topic, letter.request_id or "", letter.to_wire(), message=letter)

    async def _send(self, out: list[Outbound]) -> None:
        """Produce everything and wait for every ack (the commit must not overtake them)."""
        if not out:
            return
        assert self._producer is not None
        records = ((item.topic, item.key.encode(), item.value, item.headers) for item in out)
        self.stats.produced += await produce_all(self._producer, records)

    def _acknowledged(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Everything ``records`` produced is acknowledged: their offsets may be committed."""
        pending = self._pending_commit
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            pending[tp] = max(pending.get(tp, 0), record.offset + 1)
        self.stats.committed += len(records)  # done either way: committed, or redone by the new owner

    async def flush_commits(self) -> None:
        """Commit the acknowledged offsets of partitions this replica still holds (a moved one's new owner
        redoes), and only into the broker they were read from (see :meth:`_broker_unchanged`)."""
        offsets, self._pending_commit = self._pending_commit, {}
        self._last_commit = time.monotonic()
        if self._consumer is None or not offsets:
            return
        held = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in held}
        if not offsets or not await self._broker_unchanged():
            return
        self.stats.commits += 1
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved on: the new owner redoes this batch (at-least-once).
            self.stats.commit_failures += 1
            log.warning("stage %s: commit failed, batch will be redone: %r", self.handler.stage, exc)
