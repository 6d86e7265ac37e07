"""How close does tierflow get to the broker's own ceiling on this machine?

One run, one embedded broker (started here, stopped in ``finally`` by its pid),
three measurements:

(a) **raw chain** — the ceiling. A producer writes N keyed ~200-byte records to
    topic A; three hops consume A→B, B→C, C→D and a final consumer reads D.
    Each hop keeps tierflow's delivery discipline (``workers/stage.py``) and its
    batched produce (``topics/produce.py``): a
    consumer group, ``getmany`` batches of ``max_batch``, produce the batch with
    ``acks=all``, await every ack, then commit manually; the same
    ``session_timeout_ms``, ``fetch_max_wait_ms``, partitions and ``linger_ms``
    as the pipeline. ``raw_chain_rps`` = N / (first send → last record at D).
(b) **pipeline** — the full tierflow pipeline (router, three ``simulated`` tiers
    at zero model time, verifier, results sink, each a Ray actor process) at
    maximum rate: ``pipeline_rps`` = N / (first send → last result).
(c) **half-load latency** — the pipeline paced at half of (b)'s rate for a
    bounded time; p50/p99 of ``Result.latency_ms`` (``created_at`` is stamped
    when a request is sent).

Why every raw hop is its own OS process (``multiprocessing`` spawn), not three
asyncio tasks in one process: in (b) every stage is a separate Ray actor
process, so stages run in parallel on separate cores and each pays its own
event loop, client and kernel round trips. Three tasks in one process would
share one GIL and one event loop — a *lower*, CPU-bound ceiling on a small
machine, flattering the ratio. Plain processes rather than Ray actors keep the
ceiling free of Ray's own machinery (core-worker threads, raylet), which is
part of what tierflow costs. For the same reason (a) runs before Ray starts.
In both cases the driver does the same thing: send in chunks of 500, awaiting
the acks of each chunk (``RequestProducer.send_many``), while one group-less
consumer reads the last topic (``ResultCollector``). Topics have the same
partition count, and the raw value is as long as a request's input text.

Hop counts differ: a raw record makes 3 consume→produce hops; a tierflow request
makes ``1 + 2 * tiers visited`` (router → tier, tier → answers, verifier →
results or escalate), so the JSON also gives records moved per second
(``*_hop_rps``) for a per-hop comparison. The goal in the issue is
``ratio = pipeline_rps / raw_chain_rps >= 0.5``; this script reports what it
measures, whatever it is.

On a small machine the stages, the broker and the driver share a few cores, so
rates are set by CPU. Each phase therefore also records the cores used per
process (from ``/proc``), including an idle phase (consumers polling empty
topics every ``fetch_max_wait_ms``) and ``other``: load this script did not
start, which makes a run noisy and is flagged in the summary. The raw chain,
about ten times faster than the pipeline, runs three times; its median counts.

Usage::

    .venv/bin/python load_tests/pipeline_throughput.py --json pipeline_throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import multiprocessing
import os
import platform
import random
import shutil
import string
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import BrokerConfig, Config, RayConfig, load_portfolio, parse_config
from infra.datasets import Item, load_items
from load_tests.sustained import ProbeTarget, SustainedSearch
from policies.window import percentile_summary
from topics.admin import delete_topics, ensure_topics
from topics.errors import BrokerError, TierflowError
from topics.messages import Request, Result
from topics.pacing import IDLE_AFTER_S
from topics.produce import produce_all
from workers.stage import PRODUCER_BATCH_BYTES

VALUE_BYTES = 200
"""Payload size of a raw record and of a request's input text."""
PARTITIONS = 2
"""Partitions of every topic, raw and pipeline alike."""
MAX_BATCH = 500
"""Records per poll per stage (``limits.max_batch``) and per raw hop."""
SESSION_TIMEOUT_MS = 3000
FETCH_MAX_WAIT_MS = 10
SEND_CHUNK = 500
"""Records per ``send_many`` at maximum rate (as ``tierflow demo`` sends)."""
WARMUP = 300
"""Records sent through each system and awaited before measuring: the first group joins take about a
session timeout each, and must not count as throughput."""
RAW_REPEATS = 3
"""The raw chain is ~10x faster than the pipeline, so one pass lasts seconds and a burst of other
load on a small machine skews it; it runs this often and reports the median pass."""
IDLE_S = 15.0
"""How long each system's CPU is metered with no traffic: the cost of consumers polling empty topics."""
IDLE_SETTLE_S = IDLE_AFTER_S + 1.0
"""Quiet time before the pipeline's idle phase is metered: its consumers have switched to the idle wait."""
HALF_LOAD_S = 15.0
"""How long (c) sends at half rate."""
PACE_HZ = 50
"""Send ticks per second when pacing (c)."""
NOISY_CORES = 0.3
"""Cores used by processes this benchmark did not start above which the summary warns."""
READY_S = 120.0
"""Bound on starting the pipeline or the raw hops (first group joins take ~session timeout each)."""
DEFAULT_REQUESTS = 20_000


class BenchmarkError(TierflowError):
    """A phase of the benchmark did not finish within its bound."""


def _busy_ticks(pid: int | None = None) -> int:
    """CPU clock ticks used so far by ``pid`` (all its threads), or by the whole machine when ``None``.

    Read from ``/proc`` (Linux); 0 where it cannot be read, so the figures degrade to zeros, not errors.
    """
    try:
        if pid is None:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
            return user + nice + system + irq + softirq + steal
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(stat[11]) + int(stat[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0


def _descendants(root: int) -> set[int]:
    """Every live process below ``root`` (Linux ``/proc``); empty where it cannot be read."""
    parents: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class CpuMeter:
    """Cores used per named process over a phase, by the rest of what we started, and by everything else.

    On two cores the stages, the broker and the driver compete for the same CPU, so
    where the CPU went is the evidence for what limits a rate. ``ours (rest)`` is
    every other process this script started (Ray's daemons); ``other`` is what
    remains of the machine's busy time (anything else running: a noisy machine).
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.rest = _descendants(os.getpid()) - set(pids.values())
        self.started = time.monotonic()
        self.machine = _busy_ticks()
        self.ticks = {name: _busy_ticks(pid) for name, pid in pids.items()}
        self.rest_ticks = {pid: _busy_ticks(pid) for pid in self.rest}

    def cores(self) -> dict[str, float]:
        ticks = max(1e-9, time.monotonic() - self.started) * os.sysconf("SC_CLK_TCK")
        used = {name: (_busy_ticks(pid) - self.ticks[name]) / ticks for name, pid in self.pids.items()}
        rest = sum(max(0, _busy_ticks(pid) - start) for pid, start in self.rest_ticks.items()) / ticks
        machine = (_busy_ticks() - self.machine) / ticks
        out = {name: round(value, 3) for name, value in used.items()}  # an idle Ray actor uses ~0.008
        out["ours (rest)"] = round(rest, 3)
        out["other"] = round(max(0.0, machine - rest - sum(used.values())), 3)
        out["machine"] = round(machine, 3)
        return out


# --------------------------------------------------------------------------- (a) raw chain


@dataclass(frozen=True)
class HopSpec:
    """What one raw hop process needs; picklable so ``spawn`` can hand it over."""

    bootstrap: str
    source: str
    target: str
    group: str
    lifetime_s: float
    """The hop exits by itself after this long, so a crashed driver can never leave it spinning."""


def run_hop(spec: HopSpec) -> None:
    """Entry point of a raw hop process."""
    asyncio.run(_hop(spec))


async def _hop(spec: HopSpec) -> None:
    """Consume → produce → await acks → commit, as ``StageLoop`` does, minus decode/policy/tracing."""
    kafka = kafka_options(BrokerConfig(), spec.bootstrap)
    producer = AIOKafkaProducer(**kafka, acks="all", linger_ms=1, max_batch_size=PRODUCER_BATCH_BYTES)
    consumer = AIOKafkaConsumer(
        spec.source,
        **kafka,
        group_id=spec.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=max(100, SESSION_TIMEOUT_MS // 6),
        rebalance_timeout_ms=max(SESSION_TIMEOUT_MS, 5000),
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_poll_interval_ms=300_000,
    )
    deadline = time.monotonic() + spec.lifetime_s
    await producer.start()
    await consumer.start()
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                continue
            await produce_all(producer, ((spec.target, record.key, record.value or b"", ()) for record in records))
            offsets: dict[TopicPartition, int] = {}
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
            await consumer.commit(offsets)
    finally:
        await consumer.stop()
        await producer.stop()


@dataclass
class ChainTail:
    """The final consumer of the raw chain: counts distinct keys per prefix as they reach topic D."""

    consumer: AIOKafkaConsumer
    seen: dict[str, set[bytes]] = field(default_factory=dict)
    latencies_ms: dict[bytes, float] = field(default_factory=dict)
    """End-to-end latency of each paced record (its value starts with its send time)."""

    async def poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=200, max_records=1000)
        now = time.time()
        for records in batches.values():
            for record in records:
                key = record.key or b""
                prefix = key.split(b"-", 1)[0].decode()
                self.seen.setdefault(prefix, set()).add(key)
                if prefix == "half" and key not in self.latencies_ms:
                    sent = float((record.value or b"0|").split(b"|", 1)[0])
                    self.latencies_ms[key] = (now - sent) * 1000

    async def wait(self, prefix: str, count: int, timeout_s: float) -> float:
        """Poll until ``count`` distinct keys of ``prefix`` arrived; return when (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while len(self.seen.get(prefix, ())) < count:
            if time.monotonic() > deadline:
                got = len(self.seen.get(prefix, ()))
                raise BenchmarkError(f"raw chain: {got}/{count} '{prefix}' records reached the end in {timeout_s:.0f}s")
            await self.poll()
        return time.monotonic()


async def _send_chunks(send: Callable[[int, int], Awaitable[None]], count: int) -> None:
    """Send ``count`` items in chunks of ``SEND_CHUNK``, each chunk fully acked before the next."""
    for start in range(0, count, SEND_CHUNK):
        await send(start, min(count, start + SEND_CHUNK))


def _text(rng: random.Random, size: int = VALUE_BYTES) -> str:
    return "".join(rng.choices(string.ascii_lowercase + " ", k=size))


def _wait_bound(count: int) -> float:
    """A generous bound on how long ``count`` records may take end to end (at >= ~100 records/s)."""
    return 60.0 + count / 100.0


async def measure_raw_chain(broker: EmbeddedBroker, n: int, seed: int, console: Console) -> dict[str, Any]:
    """Measure (a): three hop processes A→B→C→D on fresh topics, deleted afterwards."""
    kafka = kafka_options(BrokerConfig(), broker.bootstrap)
    ns = f"raw-{uuid.uuid4().hex[:10]}"
    topics = [f"{ns}.{name}" for name in "ABCD"]
    await ensure_topics(kafka, dict.fromkeys(topics, PARTITIONS))
    lifetime = READY_S + 2 * _wait_bound(WARMUP + n)
    context = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
    hops = [
        context.Process(
            target=run_hop,
            args=(HopSpec(broker.bootstrap, src, dst, f"{ns}.hop{i}", lifetime),),
            name=f"raw-hop-{i}",
            daemon=True,
        )
        for i, (src, dst) in enumerate(itertools.pairwise(topics))
    ]
    producer = AIOKafkaProducer(**kafka, acks="all", linger_ms=2, max_batch_size=PRODUCER_BATCH_BYTES)
    tail = ChainTail(AIOKafkaConsumer(**kafka, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10))
    value = _text(random.Random(seed)).encode()
    try:
        for hop in hops:
            hop.start()
        await producer.start()
        await tail.consumer.start()
        partitions = [TopicPartition(topics[-1], p) for p in range(PARTITIONS)]
        tail.consumer.assign(partitions)
        await tail.consumer.seek_to_beginning(*partitions)

        async def send(prefix: str, lo: int, hi: int, stamped: bool = False) -> None:
            body = f"{time.time():.6f}|".encode() + value[:-18] if stamped else value  # same length
            await produce_all(producer, ((topics[0], f"{prefix}-{i}".encode(), body, ()) for i in range(lo, hi)))

        with console.status("raw chain: warming up (three group joins)…"):
            await send("warm", 0, WARMUP)
            await tail.wait("warm", WARMUP, READY_S)
        pids = {"broker": broker.pid or 0, "driver": os.getpid()}
        pids |= {f"hop{i}": hop.pid or 0 for i, hop in enumerate(hops)}
        idle = await _idle_cores(pids)
        runs: list[tuple[float, dict[str, float]]] = []
        for rep in range(RAW_REPEATS):
            with console.status(f"raw chain: {n} records through 3 hops ({rep + 1}/{RAW_REPEATS})…"):
                meter = CpuMeter(pids)
                started = time.monotonic()
                prefix = f"run{rep}"
                sender = asyncio.create_task(_send_chunks(functools.partial(send, prefix), n))
                ended = await _await_with(sender, tail.wait(prefix, n, _wait_bound(n)))
                runs.append((ended - started, meter.cores()))
        rate = n / sorted(seconds for seconds, _ in runs)[len(runs) // 2] / 2
        count = max(1, int(rate * HALF_LOAD_S))
        with console.status(f"raw chain: {count} records at {rate:.0f}/s (half load)…"):
            pacer = asyncio.create_task(_pace(lambda lo, hi: send("half", lo, hi, stamped=True), count, rate))
            await _await_with(pacer, tail.wait("half", count, _wait_bound(count)))  # the tail reads while sent
            sending = pacer.result()  # _await_with awaited it
    except KafkaError as exc:
        raise BrokerError(f"raw chain lost the broker: {exc}") from exc
    finally:
        with contextlib.suppress(KafkaError):
            await tail.consumer.stop()
        with contextlib.suppress(KafkaError):
            await producer.stop()
        _stop_processes(hops)
        with contextlib.suppress(BrokerError):
            await delete_topics(kafka, topics)
    seconds, cores = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    return {
        "records": n,
        "seconds": round(seconds, 3),
        "rps": round(n / seconds, 1),
        "runs_rps": [round(n / run_seconds, 1) for run_seconds, _ in runs],
        "hops": 3,
        "hop_rps": round(3 * n / seconds, 1),
        "value_bytes": VALUE_BYTES,
        "processes": "one OS process per hop (multiprocessing spawn)",
        "cpu_cores": cores,
        "idle_cpu_cores": idle,
        "half_load": {
            "target_rps": round(rate, 1),
            "sent_rps": round(count / sending, 1) if sending > 0 else 0.0,
            "records": count,
            "latency_ms": percentile_summary(list(tail.latencies_ms.values())),
        },
    }


async def _idle_cores(pids: dict[str, int], settle_s: float = 0.0) -> dict[str, float]:
    """Cores used with no traffic for ``IDLE_S`` after ``settle_s``: the fixed price of polling."""
    await asyncio.sleep(settle_s)
    meter = CpuMeter(pids)
    await asyncio.sleep(IDLE_S)
    return meter.cores()


async def _await_with(sender: asyncio.Task[Any], waiting: Awaitable[float]) -> float:
    """Await ``waiting`` while ``sender`` sends; cancel the sender if waiting fails, else let it finish."""
    try:
        result = await waiting
    except BaseException:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, KafkaError):
            await sender
        raise
    await sender
    return result


def _stop_processes(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM each hop process we started (by its pid), then SIGKILL what is still alive."""
    for process in processes:
        if process.pid is not None and process.is_alive():
            process.terminate()
    for process in processes:
        if process.pid is None:
            continue
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


# --------------------------------------------------------------------------- (b) and (c) pipeline


def pipeline_document(namespace: str, results_path: str, seed: int) -> dict[str, Any]:
    """The config of (b): the shipped ``simulated`` portfolio's ladder, at zero model time.

    Accuracies 0.70 / 0.82 / 0.93 with threshold 0.8 escalate about half of the
    requests past the first tier (about 1.7 tiers per request), a realistic share;
    ``latency_ms = 0`` so what is measured is tierflow and Kafka, not a model.
    """
    ladder = [("small", 0.70, 0.0001), ("medium", 0.82, 0.001), ("large", 0.93, 0.01)]
    tiers = [
        {
            "name": name,
            "backend": "simulated",
            "threshold": 0.8,
            "cost": cost,
            "batch_size": MAX_BATCH,
            "partitions": PARTITIONS,
            "num_cpus": 0.1,
            "options": {"accuracy": accuracy, "cost": cost, "latency_ms": 0.0, "seed": seed + i},
        }
        for i, (name, accuracy, cost) in enumerate(ladder)
    ]
    stage = {"replicas": 1, "partitions": PARTITIONS}
    return {
        "namespace": namespace,
        "dataset": "synthetic",
        "results_path": results_path,
        "broker": {"session_timeout_ms": SESSION_TIMEOUT_MS, "fetch_max_wait_ms": FETCH_MAX_WAIT_MS},
        "limits": {"max_batch": MAX_BATCH},
        "router": stage,
        "verifier": stage,
        "sink": stage,
        "tiers": tiers,
    }


@dataclass
class Driver:
    """The client side of (b) and (c): one producer, one collector, deterministic request ids."""

    producer: RequestProducer
    collector: ResultCollector
    seed: int
    text: str

    def ids(self, phase: str, count: int) -> set[str]:
        return {f"{phase}-{self.seed}-{i}" for i in range(count)}

    def requests(self, phase: str, lo: int, hi: int) -> list[Request]:
        """Requests stamped now: ``created_at`` is their send time, so latency starts when they leave."""
        now = time.time()
        return [Request(id=f"{phase}-{self.seed}-{i}", input=self.text, created_at=now) for i in range(lo, hi)]

    async def send(self, phase: str, lo: int, hi: int) -> None:
        await self.producer.send_many(self.requests(phase, lo, hi))

    async def settle(self, phase: str, count: int, timeout_s: float) -> float:
        """Wait for a result (or dead letter) of every id of ``phase``; return when (monotonic)."""
        missing = await self.collector.wait_for(self.ids(phase, count), timeout_s)
        if missing:
            unsettled = f"{len(missing)}/{count} '{phase}' requests"
            raise BenchmarkError(f"pipeline: {unsettled} unsettled after {timeout_s:.0f}s")
        return time.monotonic()

    def results(self, phase: str, count: int) -> list[Result]:
        found = self.collector.collected.results
        return [found[i] for i in self.ids(phase, count) if i in found]


async def _pace(send: Callable[[int, int], Awaitable[None]], count: int, rate: float) -> float:
    """Send ``count`` items at ``rate`` per second in ``PACE_HZ`` ticks; return the sending time."""
    step = max(1, round(rate / PACE_HZ))
    started = time.monotonic()
    for lo in range(0, count, step):
        await asyncio.sleep(max(0.0, started + lo / rate - time.monotonic()))
        await send(lo, min(count, lo + step))
    return time.monotonic() - started


Stats = dict[str, list[dict[str, Any]]]


def _batching(before: Stats, after: Stats) -> dict[str, dict[str, float]]:
    """Per pool over one phase: records consumed, polls that returned records, and their mean size.

    Small mean batches at maximum rate mean a stage keeps up and pays its per-poll
    round trips (fetch, acks, commit) on few records; batches near ``max_batch``
    mean that stage is the bottleneck.
    """
    out: dict[str, dict[str, float]] = {}
    for pool, replicas in after.items():
        consumed = sum(s.get("consumed", 0) for s in replicas) - sum(s.get("consumed", 0) for s in before.get(pool, []))
        batches = sum(s.get("batches", 0) for s in replicas) - sum(s.get("batches", 0) for s in before.get(pool, []))
        out[pool] = {"consumed": consumed, "batches": batches, "mean_batch": round(consumed / max(1, batches), 1)}
    return out


def _stage_pids(stats: Stats) -> dict[str, int]:
    return {f"{pool}[{s.get('replica', 0)}]": int(s["pid"]) for pool, reps in stats.items() for s in reps if "pid" in s}


async def measure_pipeline(
    config: Config, broker: EmbeddedBroker, n: int, seed: int, console: Console
) -> dict[str, Any]:
    """Measure (b) and (c) on one deployed pipeline; the pipeline is stopped whatever happens."""
    from infra.pipeline import Pipeline  # imports ray: only after the caller set Ray's environment

    kafka = kafka_options(config.broker, broker.bootstrap)
    pipeline = Pipeline(config, broker.bootstrap)
    try:
        with console.status("pipeline: starting stage actors on Ray…"):
            await asyncio.wait_for(pipeline.start(ready_timeout_s=READY_S), timeout=READY_S + 10)
        producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
        driver = Driver(producer, collector, seed, _text(random.Random(seed)))
        await driver.collector.start()
        await driver.producer.start()
        try:
            with console.status("pipeline: warming up…"):
                await driver.send("warm", 0, WARMUP)
                await driver.settle("warm", WARMUP, READY_S)
            warm = await pipeline.stats()
            pids = {"broker": broker.pid or 0, "driver": os.getpid()} | _stage_pids(warm)
            with console.status(f"pipeline: idle ({IDLE_SETTLE_S:.0f} s to settle, {IDLE_S:.0f} s metered)…"):
                idle = await _idle_cores(pids, IDLE_SETTLE_S)
            with console.status(f"pipeline: {n} requests at maximum rate…"):
                meter = CpuMeter(pids)
                started = time.monotonic()
                sender = asyncio.create_task(_send_chunks(lambda lo, hi: driver.send("max", lo, hi), n))
                ended = await _await_with(sender, driver.settle("max", n, _wait_bound(n)))
                max_cores = meter.cores()
            after_max = await pipeline.stats()
            seconds = ended - started
            rps = n / seconds
            paths = [len(r.path) for r in driver.results("max", n)]
            mean_tiers = sum(paths) / len(paths) if paths else 0.0
            rate = rps / 2
            count = max(1, int(rate * HALF_LOAD_S))
            with console.status(f"pipeline: {count} requests at {rate:.0f}/s (half load)…"):
                meter = CpuMeter(pids)
                sending = await _pace(functools.partial(driver.send, "half"), count, rate)
                await driver.settle("half", count, _wait_bound(count))
                half_cores = meter.cores()
            after_half = await pipeline.stats()
            latencies = [r.latency_ms for r in driver.results("half", count)]
            collected = driver.collector.collected
        finally:
            await driver.producer.stop()
            await driver.collector.stop()
    finally:
        with console.status("pipeline: stopping stage actors…"):
            await pipeline.stop()
        with contextlib.suppress(BrokerError):
            await delete_topics(kafka, config.layout.all_topics())
    mean_hops = 1 + 2 * mean_tiers
    return {
        "max_rate": {
            "requests": n,
            "seconds": round(seconds, 3),
            "rps": round(rps, 1),
            "mean_tiers": round(mean_tiers, 3),
            "mean_hops": round(mean_hops, 3),
            "hop_rps": round(rps * mean_hops, 1),
            "cpu_cores": max_cores,
            "batching": _batching(warm, after_max),
        },
        "half_load": {
            "target_rps": round(rate, 1),
            "sent_rps": round(count / sending, 1) if sending > 0 else 0.0,
            "requests": count,
            "latency_ms": percentile_summary(latencies),
            "cpu_cores": half_cores,
            "batching": _batching(after_max, after_half),
        },
        "idle_cpu_cores": idle,
        "dead_letters": len(collected.dead_letters),
        "raw_duplicates": collected.raw_duplicates,
        "commit_failures": sum(s.get("commit_failures", 0) for reps in after_half.values() for s in reps),
    }


# --------------------------------------------------------------------------- (d) sustained rate

SUSTAINED_START_RPS = {"simulated": 1000.0, "headlines": 50.0}
"""First rate probed per portfolio; the search doubles from there."""


def measure_sustained(
    portfolio: str, broker: EmbeddedBroker, run_dir: Path, options: SustainedOptions, console: Console
) -> dict[str, Any]:
    """Deploy a shipped portfolio as configured (default batch size, one replica per pool) and search (d)."""
    from infra.demo import prepare_backends  # imports ray: only after the caller set Ray's environment

    config = load_portfolio(portfolio)
    items = load_items(config.dataset, 2000, seed=1)
    config, _ = prepare_backends(config, items[0], console)  # trains and caches models (runs its own event loop)
    deploy = functools.partial(_fresh_pipeline, portfolio, config, items, broker, run_dir, console)
    start = options.start_rps or SUSTAINED_START_RPS.get(portfolio, 100.0)
    found = asyncio.run(
        SustainedSearch(deploy, items, options.probe_s).search(start, options.max_probes, console, portfolio)
    )
    found["config"] = {
        "max_batch": config.limits.max_batch,
        "tiers": {
            tier.name: {"latency_ms": tier.options.get("latency_ms"), "batch_size": tier.batch_size}
            for tier in config.tiers
        },
    }
    return found


@contextlib.asynccontextmanager
async def _fresh_pipeline(
    portfolio: str,
    config: Config,
    items: list[Item],
    broker: EmbeddedBroker,
    run_dir: Path,
    console: Console,
    label: str,
) -> AsyncIterator[ProbeTarget]:
    """One probe's pipeline: its own namespace (so fresh topics), started, warmed up; stopped and deleted after."""
    from infra.pipeline import Pipeline

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    config = replace(config, namespace=namespace, results_path=str(run_dir / f"{label}.jsonl"))
    kafka = kafka_options(config.broker, broker.bootstrap)
    pipeline = Pipeline(config, broker.bootstrap)
    try:
        with console.status(f"{portfolio}: starting stage actors on Ray…"):
            await asyncio.wait_for(pipeline.start(ready_timeout_s=READY_S), timeout=READY_S + 10)
        producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
        await collector.start()
        await producer.start()
        try:
            with console.status(f"{portfolio}: warming up…"):
                warm = [
                    Request(id=f"warm-{i}", input=item.text, created_at=time.time())
                    for i, item in enumerate(items[:WARMUP])
                ]
                await producer.send_many(warm)
                if missing := await collector.wait_for({r.id for r in warm}, READY_S):
                    raise BenchmarkError(f"{portfolio}: {len(missing)}/{WARMUP} warm-up requests unsettled")
            topics = [topic for topic in config.layout.all_topics() if topic != config.layout.control]
            yield ProbeTarget(producer, collector, kafka, topics, pipeline.stats)
        finally:
            await producer.stop()
            await collector.stop()
    finally:
        with console.status(f"{portfolio}: stopping stage actors…"):
            await pipeline.stop()
        with contextlib.suppress(BrokerError):
            await delete_topics(kafka, config.layout.all_topics())


@dataclass(frozen=True)
class SustainedOptions:
    probe_s: float = 60.0
    max_probes: int = 6
    start_rps: float = 0.0
    """0: the portfolio's ``SUSTAINED_START_RPS``."""
    portfolios: tuple[str, ...] = ("simulated", "headlines")


# --------------------------------------------------------------------------- driver


def summarize(report: dict[str, Any], console: Console) -> None:
    """Print the figures that answer the issue's question (is ratio >= 0.5?)."""
    raw, pipe = report["raw_chain"], report["pipeline"]
    half = pipe["half_load"]
    lat = half["latency_ms"]
    table = Table(title=f"tierflow vs raw aiokafka chain ({report['machine']['cores']} cores)", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows = [
        (
            "raw 3-hop chain",
            f"{report['raw_chain_rps']:.0f} rec/s ({raw['hop_rps']:.0f} hops/s; "
            f"median of {', '.join(f'{r:.0f}' for r in raw['runs_rps'])})",
        ),
        (
            "pipeline, max rate",
            f"{report['pipeline_rps']:.0f} req/s ({pipe['max_rate']['hop_rps']:.0f} hops/s, "
            f"{pipe['max_rate']['mean_hops']:.2f} hops, {pipe['max_rate']['mean_tiers']:.2f} tiers per request)",
        ),
        ("ratio (goal >= 0.5)", f"{report['ratio']:.2f}"),
        (
            f"latency at half load ({half['sent_rps']:.0f} req/s)",
            f"p50 {lat['p50']:.0f} ms / p95 {lat['p95']:.0f} ms / p99 {lat['p99']:.0f} ms",
        ),
        (
            f"raw chain at half load ({raw['half_load']['sent_rps']:.0f} rec/s)",
            f"p50 {raw['half_load']['latency_ms']['p50']:.0f} ms / p99 {raw['half_load']['latency_ms']['p99']:.0f} ms"
            f" (pipeline p50 = {report['half_load_p50_vs_raw']:.1f}x; goal <= 3x)",
        ),
        ("idle pipeline, broker included (goal < 0.1)", f"{report['idle_cores']:.2f} cores"),
        (
            f"Ray alone, {report['ray_idle_floor']['actors']} idle actors and its daemons",
            f"{report['ray_idle_floor_cores']:.2f} cores",
        ),
        *(
            (
                f"sustained, {name} as shipped",
                f"{found['sustained_rps']:.0f} req/s, p99 {found['sustained_p99_ms'] or 0:.0f} ms"
                + (f" ({report['sustained_vs_raw']:.2f} x raw; goal >= 0.2)" if name == "simulated" else ""),
            )
            for name, found in report["sustained"].items()
        ),
        ("dead letters / raw duplicates", f"{pipe['dead_letters']} / {pipe['raw_duplicates']}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    console.print(_cpu_table(report))
    phases = (raw["cpu_cores"], pipe["max_rate"]["cpu_cores"], half["cpu_cores"])
    busy = max(cores.get("other", 0.0) for cores in phases)
    if busy > NOISY_CORES:
        console.print(f"[yellow]other processes used up to {busy:.2f} cores while measuring: numbers are noisy[/]")


def _cpu_table(report: dict[str, Any]) -> Table:
    """Cores used per process in each measured phase: where the two cores went."""
    phases = {
        "raw idle": report["raw_chain"]["idle_cpu_cores"],
        "raw chain": report["raw_chain"]["cpu_cores"],
        "pipeline idle": report["pipeline"]["idle_cpu_cores"],
        "pipeline max": report["pipeline"]["max_rate"]["cpu_cores"],
        "pipeline half": report["pipeline"]["half_load"]["cpu_cores"],
    }
    table = Table(title="CPU cores used while measuring")
    table.add_column("process")
    for phase in phases:
        table.add_column(phase, justify="right")
    names = list(dict.fromkeys(name for cores in phases.values() for name in cores))
    for name in names:
        table.add_row(name, *(f"{cores[name]:.2f}" if name in cores else "" for cores in phases.values()))
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", default="", metavar="PATH", help="write the report as JSON here")
    parser.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        metavar="N",
        help=f"records for (a) and requests for (b) (default {DEFAULT_REQUESTS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="payload text, request ids and tier draws (default 0)")
    parser.add_argument(
        "--probe-s", type=float, default=60.0, metavar="S", help="seconds per sustained-rate probe (default 60)"
    )
    parser.add_argument(
        "--max-probes", type=int, default=6, metavar="N", help="sustained-rate probes per portfolio (default 6)"
    )
    parser.add_argument(
        "--sustained",
        default="simulated,headlines",
        metavar="LIST",
        help="portfolios whose sustained rate is searched, comma-separated ('' skips; default simulated,headlines)",
    )
    return parser


def measure_ray_floor(actors: int, console: Console) -> dict[str, Any]:
    """Idle cores of ``actors`` Ray actors that do nothing, and of Ray's own daemons: the floor under
    the idle pipeline, which runs one actor process per stage replica and the controller."""
    import ray

    @ray.remote(num_cpus=0)
    class Idle:
        def pid(self) -> int:
            return os.getpid()

    handles = [Idle.remote() for _ in range(actors)]  # type: ignore[attr-defined]
    try:
        pids = {f"idle actor {i}": pid for i, pid in enumerate(ray.get([h.pid.remote() for h in handles]))}
        with console.status(f"Ray's own floor: {actors} idle actors ({IDLE_S:.0f} s metered)…"):
            cores = asyncio.run(_idle_cores(pids | {"driver": os.getpid()}, settle_s=2.0))
    finally:
        for handle in handles:
            ray.kill(handle)
    per_actor = [cores[name] for name in pids]
    return {"actors": actors, "actors_cores": round(sum(per_actor), 3), "daemons_cores": cores["ours (rest)"],
            "cores": round(sum(per_actor) + cores["ours (rest)"], 3), "per_process": cores}  # fmt: skip


def run(n: int, seed: int, console: Console, sustained: SustainedOptions) -> dict[str, Any]:
    """All three measurements; everything started here is stopped here, on success or error."""
    run_dir = Path(tempfile.mkdtemp(prefix="tierflow-bench-"))
    broker = EmbeddedBroker(log_dir=run_dir)
    ray_started = False
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is first imported (below)
    from infra.ray_cluster import start_ray, stop_ray

    doc = pipeline_document(f"bench-{uuid.uuid4().hex[:10]}", str(run_dir / "results.jsonl"), seed)
    config = parse_config(doc)
    load_before = round(os.getloadavg()[0], 2)
    try:
        bootstrap = broker.start()
        console.print(f"embedded broker on {bootstrap} (pid {broker.pid}), run dir {run_dir}")
        raw = asyncio.run(measure_raw_chain(broker, n, seed, console))
        with console.status("starting Ray on 127.0.0.1…"):
            ray_started = start_ray(RayConfig())
        pipe = asyncio.run(measure_pipeline(config, broker, n, seed, console))
        replicas = [name for name in pipe["idle_cpu_cores"] if "[" in name]  # "router[0]", ...
        floor = measure_ray_floor(len(replicas) + 1, console)  # the stage replicas and the controller
        held = {name: measure_sustained(name, broker, run_dir, sustained, console) for name in sustained.portfolios}
    finally:
        stop_ray(ray_started)
        broker.stop()  # terminates the broker subprocess by its pid (never by name)
    shutil.rmtree(run_dir, ignore_errors=True)  # kept only when a phase failed: the broker log is there
    idle = pipe["idle_cpu_cores"]
    simulated, headlines = held.get("simulated", {}), held.get("headlines", {})
    return {
        "raw_chain_rps": raw["rps"],
        "pipeline_rps": pipe["max_rate"]["rps"],
        "ratio": round(pipe["max_rate"]["rps"] / raw["rps"], 3),
        "half_load_latency_ms": {k: pipe["half_load"]["latency_ms"][k] for k in ("p50", "p99")},
        "raw_half_load_latency_ms": {k: raw["half_load"]["latency_ms"][k] for k in ("p50", "p99")},
        "half_load_p50_vs_raw": round(
            pipe["half_load"]["latency_ms"]["p50"] / max(raw["half_load"]["latency_ms"]["p50"], 1e-9), 2
        ),
        "idle_cores": round(sum(v for k, v in idle.items() if k not in ("driver", "other", "machine")), 3),
        "ray_idle_floor_cores": floor["cores"],
        "ray_idle_floor": floor,
        "sustained_rps": simulated.get("sustained_rps"),
        "sustained_p99_ms": simulated.get("sustained_p99_ms"),
        "sustained_vs_raw": round(simulated["sustained_rps"] / raw["rps"], 3) if simulated else None,
        "headlines_sustained_rps": headlines.get("sustained_rps"),
        "headlines_sustained_p99_ms": headlines.get("sustained_p99_ms"),
        "sustained": held,
        "requests": n,
        "seed": seed,
        "raw_chain": raw,
        "pipeline": pipe,
        "machine": {
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_1m_before": load_before,
        },
        "config": doc,
        "constants": {
            "partitions": PARTITIONS,
            "max_batch": MAX_BATCH,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            "send_chunk": SEND_CHUNK,
            "warmup": WARMUP,
            "half_load_s": HALF_LOAD_S,
            "idle_s": IDLE_S,
            "raw_repeats": RAW_REPEATS,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.requests < 1:
        print("--requests must be >= 1", file=sys.stderr)
        return 2
    console = Console()
    portfolios = tuple(name.strip() for name in args.sustained.split(",") if name.strip())
    sustained = SustainedOptions(args.probe_s, args.max_probes, portfolios=portfolios)
    try:
        report = run(args.requests, args.seed, console, sustained)
    except TierflowError as exc:
        print(f"pipeline_throughput: {exc}", file=sys.stderr)
        return 2
    summarize(report, console)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
