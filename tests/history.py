"""The history checker: after faults heal, is every request accounted for exactly once?

Follows ../shared/reliability.md: wait until every consumer group of the pipeline has
no lag, read the results, dead-letter and escalation topics from the beginning, and
check that
* every sent id has a result or a dead letter (ids whose send outcome is unknown may
  have neither);
* no result names an id that was never sent;
* the sink delivered each id once (raw repeats on the results topic are counted and
  reported separately: at-least-once makes them legal);
* every escalation names the answer it escalates (``<id>/<previous hop>/<tier>``).
Reusable by load tests; the seed of a random fault schedule is printed on failure.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.config import Config
from topics import DeadLetter, DecodeError, Result, Task


@dataclass
class HistoryReport:
    sent: int
    results: int
    dead_letters: int
    missing: list[str] = field(default_factory=list)
    phantom: list[str] = field(default_factory=list)
    raw_duplicates: int = 0
    delivered_duplicates: int = 0
    undelivered: list[str] = field(default_factory=list)
    """Ids with a result on the topic that the sink never delivered."""
    bad_escalations: list[str] = field(default_factory=list)
    undecodable: int = 0
    seed: int | None = None
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    dead_letter_ids: dict[str, str] = field(default_factory=dict)
    """Request id (where the record had one) -> the reason it was dead-lettered."""
    completed_at: list[float] = field(default_factory=list)
    """When each id's first result was made: throughput over time, for benchmarks."""

    def problems(self) -> list[str]:
        found = []
        if self.missing:
            found.append(f"{len(self.missing)} sent ids have no result or dead letter, e.g. {self.missing[:3]}")
        if self.phantom:
            found.append(f"{len(self.phantom)} results for ids never sent, e.g. {self.phantom[:3]}")
        if self.undelivered:
            found.append(f"{len(self.undelivered)} results the sink never delivered, e.g. {self.undelivered[:3]}")
        if self.delivered_duplicates:
            found.append(f"{self.delivered_duplicates} ids delivered more than once by the sink")
        if self.bad_escalations:
            found.append(f"{len(self.bad_escalations)} escalations without their source answer")
        if self.undecodable:
            found.append(f"{self.undecodable} undecodable records on output topics")
        return found

    def assert_ok(self) -> None:
        problems = self.problems()
        if problems:
            seed = f" (replay with fault schedule seed {self.seed})" if self.seed is not None else ""
            raise AssertionError("; ".join(problems) + seed)


def consumer_groups(config: Config) -> dict[str, list[str]]:
    """Every consumer group of the deployment and the topics it reads."""
    layout = config.layout
    groups = {f"{config.namespace}.router": [layout.requests], f"{config.namespace}.verifier": [layout.answers]}
    for tier in layout.tiers:
        groups[f"{config.namespace}.worker.{tier}"] = [layout.tier(tier), layout.escalate(tier)]
    if config.results_path:
        groups[f"{config.namespace}.sink"] = [layout.results]
    return groups


async def total_lag(kafka: dict[str, Any], config: Config) -> int:
    """Records not yet committed by their stage, over every group (no group is joined to ask).

    Ends are high watermarks from a fetch: Tansu's ListOffsets answer can trail the records.
    """
    from topics.reader import TopicReader

    lag = 0
    counts = config.partitions()
    groups = consumer_groups(config)
    every = sorted({TopicPartition(t, p) for topics in groups.values() for t in topics for p in range(counts[t])})
    async with TopicReader(kafka, sorted({tp.topic for tp in every})) as reader:
        ends = await reader.high_watermarks(every)
    for group, topics in groups.items():
        consumer = AIOKafkaConsumer(**kafka, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            for tp in (TopicPartition(t, p) for t in topics for p in range(counts[t])):
                lag += max(0, ends[tp] - (await consumer.committed(tp) or 0))
        finally:
            await consumer.stop()
    return lag


async def wait_for_zero_lag(kafka: dict[str, Any], config: Config, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (lag := await total_lag(kafka, config)) > 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumer lag still {lag} after {timeout_s:.0f}s")
        await asyncio.sleep(0.5)


async def read_all(kafka: dict[str, Any], topics: Iterable[str], partitions: dict[str, int]) -> list[tuple[str, bytes]]:
    """Every record of ``topics`` from offset 0 to their current end, as (topic, value)."""
    consumer = AIOKafkaConsumer(**kafka, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions[t])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                return out
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                out += [(tp.topic, record.value or b"") for record in records]
        raise AssertionError(f"could not read {list(topics)} to their end within 60s")
    finally:
        await consumer.stop()


async def check_history(
    kafka: dict[str, Any],
    config: Config,
    sent: Collection[str],
    *,
    unknown: Collection[str] = (),
    seed: int | None = None,
    timeout_s: float = 90.0,
) -> HistoryReport:
    """Wait for the pipeline to drain, then check every promise above (call while it still runs)."""
    await wait_for_zero_lag(kafka, config, timeout_s)
    layout = config.layout
    topics = [layout.results, layout.dlq] + [layout.escalate(t) for t in layout.tiers]
    results: Counter[str] = Counter()
    first_done: dict[str, float] = {}
    dead: set[str] = set()
    report = HistoryReport(sent=len(sent), results=0, dead_letters=0, seed=seed)
    for topic, value in await read_all(kafka, topics, config.partitions()):
        try:
            if topic == layout.results:
                result = Result.from_wire(value)
                results[result.request_id] += 1
                first_done[result.request_id] = min(first_done.get(result.request_id, math.inf), result.completed_at)
            elif topic == layout.dlq:
                letter = DeadLetter.from_wire(value)
                report.dead_letters += 1
                report.dead_letter_reasons[letter.reason] += 1
                dead.add(letter.request_id or "")
                if letter.request_id:
                    report.dead_letter_ids[letter.request_id] = letter.reason
            else:
                task = Task.from_wire(value)
                previous = task.history[-1] if task.history else None
                expected = f"{task.request.id}/{task.hop - 1}/{previous.tier}" if previous else None
                if task.source_answer is None or task.source_answer != expected:
                    report.bad_escalations.append(task.request.id)
        except DecodeError:
            report.undecodable += 1
    wanted = set(sent)
    report.results = len(results)
    report.completed_at = sorted(first_done.values())
    report.raw_duplicates = sum(count - 1 for count in results.values())
    report.missing = sorted(wanted - set(unknown) - set(results) - dead)
    report.phantom = sorted(set(results) - wanted - set(unknown))
    if config.results_path:
        delivered = delivered_counts(config.results_path)
        report.delivered_duplicates = sum(count - 1 for count in delivered.values())
        report.undelivered = sorted(set(results) - set(delivered))
    return report


def delivered_counts(path: str) -> Counter[str]:
    """How often the results sink delivered each request id."""
    file = Path(path)
    lines = file.read_text().splitlines() if file.exists() else []
    return Counter(json.loads(line)["id"] for line in lines)


async def where_are(kafka: dict[str, Any], config: Config, ids: Collection[str]) -> dict[str, dict[str, int]]:
    """For a failing test's message: how often each id's msgpack string occurs in each of the deployment's
    topics, over every partition the broker has (a rebuilt topic can have more than configured)."""
    import msgspec

    from topics.reader import TopicReader

    layout = config.layout
    topics = sorted(config.partitions())
    needles = {i: msgspec.msgpack.encode(i) for i in ids}
    found: dict[str, Counter[str]] = {i: Counter() for i in ids}
    async with TopicReader(kafka, [layout.requests]) as reader:
        every = [tp for tps in (await reader.topic_partitions(topics)).values() for tp in tps]
        ends = await reader.high_watermarks(every)
        records = await reader.read_ranges({tp: (0, None) for tp in every if ends[tp]}, ends)
    for tp, rows in records.items():
        for row in rows:
            for i, needle in needles.items():
                if needle in (row.value or b""):
                    found[i][f"{tp.topic.removeprefix(config.namespace + '.')}[{tp.partition}]"] += 1
    return {i: dict(counter) for i, counter in found.items()}
