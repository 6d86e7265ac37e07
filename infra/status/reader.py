"""The Kafka side of ``tierflow status``: one snapshot of results, lag and control state.

Everything is read from Kafka, so the command works from any machine that reaches the
brokers (no Ray, no consumer group joined, nothing committed):

* ``<ns>.results`` — the tail of every partition, read backwards in chunks until the
  window is covered, through the project's group-less :class:`~topics.reader.TopicReader`.
* lag — per stage pool (consumer group ``<ns>.<pool>``, pools ``router``, ``verifier``,
  ``worker.<tier>`` and ``sink`` when the config has a results file): end offset minus
  committed offset, summed over the partitions of the pool's topics. A group with no
  committed offset on a partition counts that partition from its beginning. Committed
  offsets are read by a plain consumer created with the group id that never subscribes
  (Tansu's admin OffsetFetch reply cannot be parsed by aiokafka's admin client); end
  offsets are the high watermarks a fetch reports (Tansu's ListOffsets answer can trail
  the records by whole batches: see ``TopicReader.high_watermarks``).
* ``<ns>.control`` — the newest ControllerReport, the newest PolicyUpdate and the last
  few ControlReplies, read backwards from the end; only those the controller signed with a
  key in ``[control] public_keys`` (the rest are counted as unsigned).

Records that do not decode are skipped and counted. aiokafka is imported when a reader
starts, so importing this module (to build the CLI parser) stays quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infra.config import Config
from infra.status.stats import ControlState, Snapshot, control_state, lag_totals, uncommitted
from topics.control import TrustedKeys
from topics.errors import BrokerError, ConfigError, DecodeError
from topics.messages import Result

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from topics.reader import TopicReader

DEFAULT_WINDOW_S = 10.0
CHUNK = 1000
"""Records per partition read per step when walking a topic backwards."""
MAX_RECORDS_PER_PARTITION = 100_000
"""The most records one snapshot reads from one results partition (bounds memory and time)."""
CONTROL_SCAN_LIMIT = 20_000
"""How far back the control topic is searched for a report and a policy update."""
READ_TIMEOUT_S = 30.0
FETCH_MAX_WAIT_MS = 50

Partition = tuple[str, int]
"""(topic, partition): the pure half keys everything by plain tuples."""
Record = tuple[int, bytes | None]
"""(offset, value) of one record."""


def stage_pools(config: Config) -> dict[str, list[str]]:
    """Each stage pool of the deployment and the topics its consumer group reads."""
    return config.runtime("").pool_topics()


@dataclass(frozen=True, slots=True)
class PoolOffsets:
    """One stage pool's offsets at one read."""

    produced: int
    """Records produced to the pool's topics so far (the sum of their end offsets)."""
    lag: int
    partitions: int
    """The fewest partitions of the pool's topics on the broker."""


@dataclass(frozen=True, slots=True)
class _Offsets:
    """One read of the deployment's offsets, and the lag computed from them."""

    partitions: dict[str, list[Partition]]
    ends: dict[Partition, int]
    starts: dict[Partition, int]
    lag: dict[str, int]
    uncommitted: list[str]


class StatusReader:
    """Kafka clients for repeated snapshots: one group-less :class:`~topics.reader.TopicReader` for the
    data, one plain consumer per group for its committed offsets."""

    def __init__(self, kafka: Mapping[str, Any], config: Config, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.kafka = dict(kafka)
        self.config = config
        self.timeout_s = timeout_s
        self.pools = stage_pools(config)
        self.trusted = TrustedKeys.from_hex(config.namespace, config.control.public_keys)
        self._data: TopicReader | None = None
        self._groups: dict[str, AIOKafkaConsumer] = {}

    @property
    def _bootstrap(self) -> str:
        return str(self.kafka.get("bootstrap_servers", ""))

    async def start(self) -> None:
        """Connect the group consumers; the data reader starts with the first snapshot (see :meth:`_reader`)."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        options = {**self.kafka, "enable_auto_commit": False, "fetch_max_wait_ms": FETCH_MAX_WAIT_MS}
        try:
            for pool in self.pools:
                consumer = AIOKafkaConsumer(**options, group_id=f"{self.config.namespace}.{pool}")
                self._groups[pool] = consumer
                await asyncio.wait_for(consumer.start(), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.stop()
            raise BrokerError(f"cannot reach the broker at {self._bootstrap}: {exc}") from exc

    async def stop(self) -> None:
        data, groups = self._data, list(self._groups.values())
        self._data, self._groups = None, {}
        if data is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(data.stop(), self.timeout_s)
        for consumer in groups:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), self.timeout_s)

    async def collect(self, window_s: float, now: float | None = None) -> Snapshot:
        """One snapshot; ``now`` (epoch seconds) defaults to the clock when reading starts."""
        from aiokafka.errors import KafkaError

        now = time.time() if now is None else now
        try:
            return await asyncio.wait_for(self._collect(window_s, now), self.timeout_s)
        except TimeoutError as exc:
            raise BrokerError(f"no status from {self._bootstrap} within {self.timeout_s:g}s") from exc
        except KafkaError as exc:
            raise BrokerError(f"reading status failed: {exc}") from exc

    def _no_namespace(self) -> ConfigError:
        return ConfigError(
            f"namespace {self.config.namespace!r} has no topics on {self._bootstrap} "
            "(is the pipeline up? tierflow up prints its namespace and broker)"
        )

    async def _reader(self) -> TopicReader:
        """The data reader, started on first use.

        A :class:`~topics.reader.TopicReader` assigns its topics when it starts, and a live view
        may be opened before ``tierflow up`` created them: until the results topic exists, each
        snapshot is refused with :meth:`_no_namespace` (asked of a group consumer's metadata, the
        one client already connected) rather than the reader failing to start.
        """
        if self._data is None:
            from topics.reader import TopicReader

            layout = self.config.layout
            probe = next(iter(self._groups.values()))
            if layout.results not in await probe.topics():
                raise self._no_namespace()
            reader = TopicReader(
                self.kafka, [layout.results, layout.control], start_at="end", fetch_max_wait_ms=FETCH_MAX_WAIT_MS
            )
            try:
                await reader.start()
            except BaseException:  # cancelled by the snapshot's timeout too: never leave a client behind
                await reader.stop()
                raise
            self._data = reader
        return self._data

    async def _partitions(self, reader: TopicReader, topics: list[str]) -> dict[str, list[Partition]]:
        """The partitions each topic has on the broker (the operator's counts, not necessarily the config's)."""
        found = await reader.topic_partitions(topics)
        if not found.get(self.config.layout.results):
            raise self._no_namespace()  # the topics went away since the reader started
        return {topic: [(tp.topic, tp.partition) for tp in tps] for topic, tps in found.items()}

    async def lag(self) -> tuple[dict[str, int], list[str]]:
        """Lag per stage pool, and the pools that have committed nothing on a partition holding records.

        Only offsets are read (no records): ``tierflow up`` asks this every half second while it drains.
        """
        offsets = await self._read_offsets()
        return offsets.lag, offsets.uncommitted

    async def pool_offsets(self) -> dict[str, PoolOffsets]:
        """Per stage pool: records produced to its topics so far, its lag, and the fewest partitions of
        its topics on the broker (the supervisor's autoscaler reads this once a second)."""
        o = await self._read_offsets()
        out = {}
        for pool, topics in self.pools.items():
            tps = [tp for topic in topics for tp in o.partitions[topic]]
            fewest = min(len(o.partitions[topic]) for topic in topics)
            out[pool] = PoolOffsets(produced=sum(o.ends[tp] for tp in tps), lag=o.lag[pool], partitions=fewest)
        return out

    async def _read_offsets(self) -> _Offsets:
        from aiokafka.errors import KafkaError

        try:
            reader = await self._reader()
            return await asyncio.wait_for(self._offsets(reader), self.timeout_s)
        except TimeoutError as exc:
            raise BrokerError(f"no offsets from {self._bootstrap} within {self.timeout_s:g}s") from exc
        except KafkaError as exc:
            raise BrokerError(f"reading offsets failed: {exc}") from exc

    async def _offsets(self, reader: TopicReader) -> _Offsets:
        from aiokafka import TopicPartition

        layout = self.config.layout
        pool_topics = {t for topics in self.pools.values() for t in topics}
        partitions = await self._partitions(reader, sorted(pool_topics | {layout.results, layout.control}))
        every = [TopicPartition(*tp) for tps in partitions.values() for tp in tps]
        ends = {(tp.topic, tp.partition): o for tp, o in (await reader.high_watermarks(every)).items()}
        starts = {(tp.topic, tp.partition): o for tp, o in (await reader.beginning_offsets(every)).items()}

        pools = {pool: [tp for t in topics for tp in partitions[t]] for pool, topics in self.pools.items()}
        committed: dict[str, dict[Partition, int | None]] = {}
        for pool, tps in pools.items():
            consumer = self._groups[pool]
            assigned = [TopicPartition(*tp) for tp in tps]
            consumer.assign(assigned)
            consumer.pause(*assigned)  # never fetch: this consumer only asks for committed offsets
            committed[pool] = {tp: await consumer.committed(TopicPartition(*tp)) for tp in tps}
        lag = lag_totals(pools, ends, committed, starts)
        return _Offsets(partitions, ends, starts, lag, uncommitted(pools, committed, ends, starts))

    async def _collect(self, window_s: float, now: float) -> Snapshot:
        reader = await self._reader()
        layout = self.config.layout
        o = await self._offsets(reader)
        results, bad, truncated = await self._read_results(
            reader, o.partitions[layout.results], o.ends, o.starts, now - window_s
        )
        control = await self._read_control(reader, o.partitions[layout.control], o.ends, o.starts)
        return Snapshot(
            namespace=self.config.namespace,
            bootstrap=self._bootstrap,
            tiers=layout.tiers,
            at=now,
            window_s=window_s,
            results=results,
            lag=o.lag,
            uncommitted=o.uncommitted,
            control=control,
            undecodable_results=bad,
            truncated=truncated,
            truncated_at=MAX_RECORDS_PER_PARTITION,
        )

    async def _read_results(
        self,
        reader: TopicReader,
        tps: list[Partition],
        ends: Mapping[Partition, int],
        starts: Mapping[Partition, int],
        cutoff: float,
    ) -> tuple[list[Result], int, bool]:
        """Walk each results partition backwards in chunks until a chunk starts before ``cutoff``."""
        results: list[Result] = []
        bad = 0
        truncated = False
        low = {tp: ends[tp] for tp in tps}
        pending = [tp for tp in tps if ends[tp] > starts[tp]]
        first = True
        while pending:
            ranges = {tp: (max(starts[tp], low[tp] - CHUNK), None if first else low[tp]) for tp in pending}
            chunks = await _read_ranges(reader, ranges, ends)
            first = False
            still = []
            for tp in pending:
                oldest = float("inf")
                for _, value in chunks[tp]:
                    try:
                        result = Result.from_wire(value or b"")
                    except DecodeError:
                        bad += 1
                        continue
                    results.append(result)
                    oldest = min(oldest, result.completed_at)
                low[tp] = ranges[tp][0]
                if low[tp] <= starts[tp] or oldest < cutoff:
                    continue
                if ends[tp] - low[tp] >= MAX_RECORDS_PER_PARTITION:
                    truncated = True
                    continue
                still.append(tp)
            pending = still
        return results, bad, truncated

    async def _read_control(
        self, reader: TopicReader, tps: list[Partition], ends: Mapping[Partition, int], starts: Mapping[Partition, int]
    ) -> ControlState:
        state = ControlState()
        for tp in tps:  # one partition
            low, first = ends[tp], True
            while low > starts[tp] and not state.complete() and ends[tp] - low < CONTROL_SCAN_LIMIT:
                start = max(starts[tp], low - CHUNK)
                chunk = await _read_ranges(reader, {tp: (start, None if first else low)}, ends)
                control_state(chunk[tp], state, trusted=self.trusted)
                low, first = start, False
        return state


async def _read_ranges(
    reader: TopicReader, ranges: Mapping[Partition, tuple[int, int | None]], ends: Mapping[Partition, int]
) -> dict[Partition, list[Record]]:
    """:meth:`TopicReader.read_ranges <topics.reader.TopicReader.read_ranges>` keyed and valued as the
    pure half wants them: (topic, partition) tuples and (offset, value) records."""
    from aiokafka import TopicPartition

    wanted = {TopicPartition(*tp): tp for tp in ranges}
    chunks = await reader.read_ranges(
        {tp: ranges[key] for tp, key in wanted.items()}, {tp: ends[key] for tp, key in wanted.items()}
    )
    return {wanted[tp]: [(r.offset, r.value) for r in records] for tp, records in chunks.items()}


async def collect_status(
    kafka: Mapping[str, Any], config: Config, window_s: float = DEFAULT_WINDOW_S, now: float | None = None
) -> Snapshot:
    """One snapshot with clients opened and closed around it."""
    reader = StatusReader(kafka, config)
    await reader.start()
    try:
        return await reader.collect(window_s, now)
    finally:
        await reader.stop()
