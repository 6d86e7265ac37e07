"""How much memory does the embedded broker gain per million requests?

The embedded broker (Tansu, memory storage engine) keeps every record it is sent and
enforces no retention, so a long ``tierflow up`` on it grows until the machine runs out.
This script measures the rate, so that ``tierflow up`` can say it and an operator can
plan: it starts an :class:`~infra.broker.EmbeddedBroker`, creates a deployment's topics
(the simulated portfolio's by default) with ``topics.admin.ensure_topics``, and writes,
per request, the records a request costs the broker on its way through the pipeline —
built as the stages build them from ``topics/messages.py`` and encoded with
``.to_wire()``, keyed by the request id and carrying a ``traceparent`` header as the
client's and every stage's records do:

* one ``Request`` on ``<ns>.requests`` (the client),
* one ``Task`` on ``<ns>.tier.<first>`` (the router),
* one ``Answer`` on ``<ns>.answers`` (the tier's worker),
* per further tier visited (``--tiers-visited`` above 1), one escalated ``Task`` with the
  history so far on ``<ns>.escalate.<tier>`` and one more ``Answer`` (the verifier, the
  next tier), as ``policies.decisions.verify_answer`` builds them,
* one ``Result`` on ``<ns>.results`` (``policies.decisions.final_result``).

They are produced with ``topics.produce.produce_all`` in batches of ``--batch`` requests,
each batch acknowledged (``acks=all``) before the next, which is also how the stages
write. The broker's resident memory (psutil) is sampled before the topics exist, once
they do, and every ``--sample-every`` requests; a least-squares line through the samples
gives MB per million requests, and MB of RSS per MB on the wire (which carries the figure
to other input sizes and escalation rates).

Two modes, because they answer different questions. The records mode isolates what the
broker keeps per byte it is sent (1.1-1.2 bytes of RSS per wire byte in big batches) and
takes seconds. ``--pipeline`` runs the real pipeline on the simulated portfolio (model
latency 0, a results sink) and sends ``Request``s, as fast as they are taken or paced at
``--rate``: it adds what the stages cost besides the records — their batch sizes (Tansu
keeps about 1 KB per produced batch, and at a low rate every stage produces tiny batches,
so a request costs about twice as much at 200/s as at full speed), offset commits (flat),
the budget controller's messages — and is the figure ``tierflow up`` quotes.

After the records mode the topics are deleted, recreated and written again: whether the
memory comes back decides whether rotating topics could bound the broker.

Noise: in the records mode RSS does not depend on what else runs, but the rate does; with
``--pipeline`` CPU contention also changes the stages' batch sizes and so the memory per
request. The report therefore says how many cores the broker, this driver, the rest of
what it started and everything else used, the load average before and after, and the
busiest other processes during the run.

Usage::

    .venv/bin/python load_tests/broker_memory.py --requests 200000 --json load_tests/results/broker_memory.json
    .venv/bin/python load_tests/broker_memory.py --requests 200000 --pipeline --json broker_memory-pipeline.json
    .venv/bin/python load_tests/broker_memory.py --requests 30000 --sample-every 5000 --pipeline --rate 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from infra.broker import EmbeddedBroker, kafka_options
from infra.config import Config, RayConfig, load_config_or_portfolio
from policies.decisions import final_result
from topics.admin import delete_topics, ensure_topics
from topics.messages import Answer, Request, Status, Task
from topics.names import TopicLayout
from topics.produce import Record, produce_all
from workers.stage import PRODUCER_BATCH_BYTES
from workers.telemetry import new_trace_headers

DEFAULT_REQUESTS = 200_000
SAMPLE_EVERY = 10_000
"""Requests between two RSS samples."""
BATCH = 1_000
"""Requests per ``produce_all`` call (4+ records each)."""
INPUT_BYTES = 200
"""Length of a request's input text: a short query (the throughput benchmark uses the same)."""
SETTLE_S = 2.0
"""Pause before the baseline and the last sample, so the broker's allocator has settled."""
OTHER_WINDOW_S = 3.0
"""How long the machine is watched before starting, to record the load already present."""
PACE_HZ = 50
"""Send ticks per second with ``--pipeline --rate``."""
TOP_OTHERS = 5
"""Busiest processes not ours to list in the report."""


@dataclass(frozen=True, slots=True)
class Sample:
    """The broker's resident memory after ``requests`` requests, ``elapsed_s`` into the run."""

    requests: int
    rss_mb: float
    wire_mb: float
    elapsed_s: float


def request_records(layout: TopicLayout, index: int, visited: int, input_text: str, now: float) -> list[Record]:
    """Every record request ``index`` leaves on the broker when ``visited`` tiers answer it.

    Built as the stages build them (``verify_answer``'s escalated task keeps the history and
    the router's ``allowed``), so the sizes on the wire are the pipeline's.
    """
    tiers = layout.tiers
    if not 1 <= visited <= len(tiers):
        raise ValueError(f"visited must be in [1, {len(tiers)}], got {visited}")
    request = Request(id=f"mem-{index:09d}", input=input_text, created_at=now, deadline=now + 120.0)
    key = request.id.encode()
    headers = new_trace_headers()
    records: list[Record] = [(layout.requests, key, request.to_wire(), headers)]
    task = Task(request=request, tier=tiers[0], allowed=tiers, policy_version=1)
    answer: Answer | None = None
    for hop in range(visited):
        topic = layout.tier(tiers[hop]) if hop == 0 else layout.escalate(tiers[hop])
        records.append((topic, key, task.to_wire(), headers))
        confidence = 0.55 + 0.4 * ((index * 7919 + hop * 104729) % 1000) / 1000
        answer = Answer(
            task=task,
            model=tiers[hop],
            output="1",
            confidence=confidence,
            features={
                "max_prob": confidence,
                "margin": 2 * confidence - 1,
                "entropy": -(confidence * math.log(confidence) + (1 - confidence) * math.log(1 - confidence)),
            },
            cost=0.0001 * 10**hop,
            latency_ms=2.0 * 5**hop,
        )
        records.append((layout.answers, key, answer.to_wire(), headers))
        if hop + 1 < visited:
            task = Task(
                request=request,
                tier=tiers[hop + 1],
                hop=hop + 1,
                history=(*task.history, answer.as_history()),
                policy_version=task.policy_version,
                source_answer=answer.answer_id,
                allowed=task.allowed,
            )
    result = final_result(task, Status.OK, answer, None, now + 0.05)
    records.append((layout.results, key, result.to_wire(), headers))
    return records


def tiers_for(index: int, tiers_visited: float) -> int:
    """Tiers request ``index`` visits so that the run averages ``tiers_visited`` (1.7: 7 in 10 twice).

    Deterministic (a low-discrepancy sequence, not a random draw), so every run writes the same bytes.
    """
    whole = math.floor(tiers_visited)
    extra = ((index * 0.6180339887498949) % 1.0) < tiers_visited - whole
    return whole + int(extra)


def wire_bytes(records: Sequence[Record]) -> int:
    """Key, value and header bytes of ``records``: what the broker is asked to keep, before framing."""
    return sum(
        len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in headers) for _, key, value, headers in records
    )


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``y = slope * x + intercept`` and its R² (1.0 for a perfect line, 0 for a flat y)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a line needs at least two points")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a line needs two different x values")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, intercept, (1.0 - ss_res / ss_tot) if ss_tot > 0 else 0.0


class CpuWatch:
    """Cores used over a window by the broker, by this driver, by the rest of what it started, and by the rest.

    ``ours (rest)`` is every other process below this one (Ray's daemons and stage actors with
    ``--pipeline``); ``other`` is the machine's busy time minus all of ours: load this script did
    not start, which makes the rate (not the memory) noisy on a small machine. The busiest other
    processes are named.
    """

    def __init__(self, broker_pid: int | None) -> None:
        self.broker = psutil.Process(broker_pid) if broker_pid else None
        self.me = psutil.Process()
        self.started = time.monotonic()
        self.machine = _busy(psutil.cpu_times())
        self.broker_cpu = _proc_cpu(self.broker)
        self.me_cpu = _proc_cpu(self.me)
        self.before = _cpu_by_process(exclude={os.getpid(), broker_pid or -1})

    def cores(self) -> dict[str, Any]:
        wall = max(1e-9, time.monotonic() - self.started)
        broker = (_proc_cpu(self.broker) - self.broker_cpu) / wall
        me = (_proc_cpu(self.me) - self.me_cpu) / wall
        machine = (_busy(psutil.cpu_times()) - self.machine) / wall
        now = _cpu_by_process(exclude={os.getpid(), self.broker.pid if self.broker else -1})
        try:
            ours = {child.pid for child in self.me.children(recursive=True)}
        except psutil.Error:
            ours = set()
        used = {pid: (cmd, cpu - self.before.get(pid, (cmd, 0.0))[1]) for pid, (cmd, cpu) in now.items()}
        rest = sum(cpu for pid, (_, cpu) in used.items() if pid in ours) / wall
        busiest = sorted(((cpu, cmd) for pid, (cmd, cpu) in used.items() if pid not in ours), reverse=True)
        return {
            "broker": round(broker, 2),
            "driver": round(me, 2),
            "ours (rest)": round(rest, 2),
            "other": round(max(0.0, machine - broker - me - rest), 2),
            "machine": round(machine, 2),
            "busiest_others": [
                {"process": cmd, "cores": round(cpu / wall, 2)} for cpu, cmd in busiest[:TOP_OTHERS] if cpu > 0
            ],
        }


def _busy(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _proc_cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _cpu_by_process(exclude: set[int]) -> dict[int, tuple[str, float]]:
    """pid -> (name and the start of its command line, CPU seconds so far), for every process we can read."""
    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        info = proc.info
        if info["pid"] in exclude or info["cpu_times"] is None:
            continue
        cmd = " ".join(info["cmdline"] or [])[:80] or info["name"] or "?"
        out[info["pid"]] = (cmd, float(info["cpu_times"].user + info["cpu_times"].system))
    return out


class Writer:
    """Writes requests' records in acknowledged batches and keeps count of what went on the wire."""

    def __init__(self, producer: AIOKafkaProducer, layout: TopicLayout, args: argparse.Namespace) -> None:
        self.producer = producer
        self.layout = layout
        self.args = args
        self.rng = random.Random(args.seed)
        self.wire = self.records = 0
        self.by_topic: dict[str, int] = {}

    async def write(self, first: int, count: int) -> None:
        """Requests ``first`` … ``first + count - 1``, in ``--batch`` batches, each acknowledged before the next."""
        alphabet = string.ascii_lowercase + "      "
        for start in range(first, first + count, self.args.batch):
            now = time.time()
            batch: list[Record] = []
            for index in range(start, min(first + count, start + self.args.batch)):
                text = "".join(self.rng.choices(alphabet, k=self.args.input_bytes))
                batch += request_records(self.layout, index, tiers_for(index, self.args.tiers_visited), text, now)
            for record in batch:
                kind = record[0].removeprefix(f"{self.layout.namespace}.").split(".")[0]
                self.by_topic[kind] = self.by_topic.get(kind, 0) + wire_bytes([record])
            self.wire += wire_bytes(batch)
            self.records += await produce_all(self.producer, batch)


async def _producer(kafka: dict[str, Any]) -> AIOKafkaProducer:
    """A started producer sending batches as large as the stages' (acks from every replica)."""
    producer = AIOKafkaProducer(
        **kafka,
        acks="all",
        linger_ms=1,
        max_batch_size=PRODUCER_BATCH_BYTES,
        max_request_size=PRODUCER_BATCH_BYTES + 65536,
    )
    await producer.start()
    return producer


async def measure(config: Config, broker: EmbeddedBroker, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Write the records of up to ``--requests`` requests and sample the broker's RSS as they land.

    Then delete the topics, recreate them and write a quarter as many requests again: whether
    deleting gives the memory back, and growth starts again from there, decides whether
    rotating to fresh topics could bound the embedded broker at all.
    """
    rss = broker.rss_mb
    before_topics = rss() or 0.0
    kafka = kafka_options(config.broker, broker.bootstrap)
    topics = config.partitions()
    await ensure_topics(kafka, topics)
    await asyncio.sleep(SETTLE_S)
    producer = await _producer(kafka)
    writer = Writer(producer, config.layout, args)
    samples = [Sample(0, rss() or 0.0, 0.0, 0.0)]
    sent = 0
    watch = CpuWatch(broker.pid)
    started = time.monotonic()
    bounded = False
    try:
        with console.status("writing…") as status:
            while sent < args.requests:
                if time.monotonic() - started > args.max_seconds:
                    bounded = True
                    break
                count = min(args.sample_every, args.requests - sent)
                await writer.write(sent, count)
                sent += count
                samples.append(Sample(sent, rss() or 0.0, writer.wire / 1e6, time.monotonic() - started))
                status.update(f"{sent:,} requests, broker {samples[-1].rss_mb:,.0f} MB")
        seconds = time.monotonic() - started
        cores = watch.cores()
        wire, records, by_topic = writer.wire, writer.records, dict(writer.by_topic)
        await asyncio.sleep(SETTLE_S)
        settled = rss() or 0.0
        with console.status("deleting the topics, then writing a quarter again…"):
            await producer.stop()
            await delete_topics(kafka, list(topics))
            await asyncio.sleep(SETTLE_S)
            after_delete = rss() or 0.0
            await ensure_topics(kafka, topics)
            producer = await _producer(kafka)
            writer.producer = producer
            again = max(1, sent // 4)
            await writer.write(sent, again)
            await asyncio.sleep(SETTLE_S)
            after_rewrite = rss() or 0.0
    finally:
        await producer.stop()
    if len(samples) < 3:
        raise SystemExit("fewer than two samples after the baseline: raise --requests or --max-seconds")
    slope, intercept, r2 = fit_line([s.requests for s in samples], [s.rss_mb for s in samples])
    per_request = wire / max(1, sent)
    return {
        "requests": sent,
        "requested": args.requests,
        "stopped_by_time_bound": bounded,
        "seconds": round(seconds, 1),
        "requests_per_s": round(sent / max(1e-9, seconds)),
        "cores_used_while_writing": cores,
        "records": records,
        "records_per_request": round(records / max(1, sent), 3),
        "tiers_visited": args.tiers_visited,
        "input_bytes": args.input_bytes,
        "bytes_per_request_on_wire": round(per_request, 1),
        "bytes_per_request_by_topic": {kind: round(b / max(1, sent), 1) for kind, b in sorted(by_topic.items())},
        "rss_mb_before_topics": round(before_topics, 1),
        "rss_mb_settled": round(settled, 1),
        "rss_samples": [
            {
                "requests": s.requests,
                "rss_mb": round(s.rss_mb, 1),
                "wire_mb": round(s.wire_mb, 1),
                "elapsed_s": round(s.elapsed_s, 1),
            }
            for s in samples
        ],
        "fit": {"mb_per_request": slope, "intercept_mb": round(intercept, 1), "r2": round(r2, 4)},
        "mb_per_million": round(slope * 1e6, 1),
        "rss_per_wire_byte": round(slope * (1 << 20) / per_request, 2),
        "after_delete": {
            "rss_mb_after_deleting_the_topics": round(after_delete, 1),
            "rewritten_requests": again,
            "rss_mb_after_rewriting": round(after_rewrite, 1),
            "growth_mb_expected_at_the_measured_rate": round(slope * again, 1),
        },
        "mb": "MiB (2^20 bytes) for RSS; wire_mb is 10^6 bytes",
    }


async def measure_pipeline(
    config: Config, broker: EmbeddedBroker, args: argparse.Namespace, console: Console
) -> dict[str, Any]:
    """The cross-check: run the real pipeline (``--pipeline``) and sample the broker as results arrive.

    What the synthetic records leave out shows up here: offset commits of every stage's group
    after every batch, the budget controller's reports on the control topic, the escalation mix
    the simulated tiers really produce. Requests go in chunks of ``--sample-every``; each chunk's
    results are awaited before the sample, so the sample counts what the pipeline wrote for it.
    """
    from infra.client import RequestProducer, ResultCollector
    from infra.pipeline import Pipeline

    rss = broker.rss_mb
    before_topics = rss() or 0.0
    kafka = kafka_options(config.broker, broker.bootstrap)
    pipeline = Pipeline(config, broker.bootstrap)
    rng = random.Random(args.seed)
    alphabet = string.ascii_lowercase + "      "
    try:
        with console.status("starting the pipeline's stage actors on Ray…"):
            await pipeline.start(ready_timeout_s=180.0)
            await asyncio.sleep(SETTLE_S)
        producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
        await producer.start()
        await collector.start()
        samples = [Sample(0, rss() or 0.0, 0.0, 0.0)]
        watch = CpuWatch(broker.pid)
        started = time.monotonic()
        sent, bounded = 0, False
        try:
            with console.status("sending…") as status:
                while sent < args.requests:
                    if time.monotonic() - started > args.max_seconds:
                        bounded = True
                        break
                    count = min(args.sample_every, args.requests - sent)
                    now = time.time()
                    chunk = [
                        Request(
                            id=f"mem-{i:09d}",
                            input="".join(rng.choices(alphabet, k=args.input_bytes)),
                            created_at=now,
                            deadline=now + 600.0,
                        )
                        for i in range(sent, sent + count)
                    ]
                    await _send(producer, chunk, args.rate)
                    missing = await collector.wait_for({r.id for r in chunk}, timeout_s=300.0)
                    if missing:
                        raise SystemExit(f"{len(missing)} requests got no result within 300 s")
                    sent += count
                    samples.append(Sample(sent, rss() or 0.0, 0.0, time.monotonic() - started))
                    status.update(f"{sent:,} requests delivered, broker {samples[-1].rss_mb:,.0f} MB")
            seconds = time.monotonic() - started
            cores = watch.cores()
        finally:
            await producer.stop()
            await collector.stop()
        records = await _records_in(kafka, list(config.partitions()))
        results = collector.collected.results.values()
        tiers = sum(len(r.path) for r in results) / max(1, len(results))
    finally:
        with console.status("stopping the pipeline…"):
            await pipeline.stop()
    if len(samples) < 3:
        raise SystemExit("fewer than two samples after the baseline: raise --requests or --max-seconds")
    slope, intercept, r2 = fit_line([s.requests for s in samples], [s.rss_mb for s in samples])
    return {
        "mode": "pipeline",
        "rate": args.rate or "max",
        "requests": sent,
        "requested": args.requests,
        "stopped_by_time_bound": bounded,
        "seconds": round(seconds, 1),
        "requests_per_s": round(sent / max(1e-9, seconds)),
        "cores_used_while_writing": cores,
        "records": records,
        "records_per_request": round(records / max(1, sent), 3),
        "tiers_visited": round(tiers, 3),
        "input_bytes": args.input_bytes,
        "dead_letters": len(collector.collected.dead_letters),
        "raw_duplicates": collector.collected.raw_duplicates,
        "rss_mb_before_topics": round(before_topics, 1),
        "rss_samples": [
            {"requests": s.requests, "rss_mb": round(s.rss_mb, 1), "wire_mb": 0.0, "elapsed_s": round(s.elapsed_s, 1)}
            for s in samples
        ],
        "fit": {"mb_per_request": slope, "intercept_mb": round(intercept, 1), "r2": round(r2, 4)},
        "mb_per_million": round(slope * 1e6, 1),
        "mb": "MiB (2^20 bytes)",
    }


async def _send(producer: Any, requests: list[Request], rate: float) -> None:
    """Send ``requests`` in chunks of 500 as fast as acknowledged, or paced at ``rate`` per second.

    Paced matters: at a low rate every stage produces tiny batches, and the broker stores each
    batch with a fixed overhead, so a request costs more memory than at full speed.
    """
    if rate <= 0:
        for lo in range(0, len(requests), 500):
            await producer.send_many(requests[lo : lo + 500])
        return
    tick = 1.0 / PACE_HZ
    per_tick = max(1, round(rate * tick))
    due = time.monotonic()
    for lo in range(0, len(requests), per_tick):
        await producer.send_many(requests[lo : lo + per_tick])
        due += per_tick / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def _records_in(kafka: dict[str, Any], topics: list[str]) -> int:
    """Records the broker holds in ``topics`` (the sum of their partitions' end offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            await consumer.topics()  # metadata first
            partitions = [
                TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        return int(sum((await consumer.end_offsets(partitions)).values()))
    finally:
        await consumer.stop()


def pipeline_config(config: Config, run_dir: Path) -> Config:
    """``config`` with zero model latency (records, not model time, are measured) and a results sink.

    The sink makes the run write what ``tierflow up`` writes: one more consumer group committing.
    """
    tiers = tuple(replace(tier, options={**tier.options, "latency_ms": 0.0}) for tier in config.tiers)
    return replace(config, tiers=tiers, results_path=str(run_dir / "results.jsonl"))


def report_table(report: dict[str, Any]) -> Table:
    """The samples: how the broker's memory followed the requests written."""
    per_request = report.get("bytes_per_request_on_wire")
    how = f"{per_request:.0f} wire bytes per request" if per_request else "the real pipeline"
    table = Table(title=f"embedded broker RSS, {how}")
    for column in ("requests", "RSS MB", "growth MB", "wire MB", "elapsed s"):
        table.add_column(column, justify="right")
    base = report["rss_samples"][0]["rss_mb"]
    for s in report["rss_samples"]:
        table.add_row(
            f"{s['requests']:,}",
            f"{s['rss_mb']:,.1f}",
            f"{s['rss_mb'] - base:,.1f}",
            f"{s['wire_mb']:,.1f}",
            f"{s['elapsed_s']:.1f}",
        )
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        metavar="N",
        help=f"requests to write (default {DEFAULT_REQUESTS:,})",
    )
    parser.add_argument("--json", default="", metavar="PATH", help="write the report as JSON here")
    parser.add_argument(
        "--portfolio", default="simulated", metavar="NAME_OR_FILE", help="whose topics to create (default simulated)"
    )
    parser.add_argument(
        "--tiers-visited",
        type=float,
        default=1.0,
        metavar="F",
        help="mean tiers per request, 1 to the portfolio's count (default 1: no escalation)",
    )
    parser.add_argument(
        "--input-bytes",
        type=int,
        default=INPUT_BYTES,
        metavar="B",
        help=f"length of each request's input (default {INPUT_BYTES})",
    )
    parser.add_argument("--batch", type=int, default=BATCH, metavar="N", help=f"requests per produce (default {BATCH})")
    parser.add_argument(
        "--sample-every",
        type=int,
        default=SAMPLE_EVERY,
        metavar="N",
        help=f"requests between RSS samples (default {SAMPLE_EVERY:,})",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        metavar="S",
        help="stop writing after this long, whatever --requests says (default 600)",
    )
    parser.add_argument("--seed", type=int, default=0, help="input text (default 0)")
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="cross-check: run the real pipeline on Ray (model latency 0) instead of writing records",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="R",
        help="with --pipeline: send R requests/s instead of as fast as the pipeline takes them (default 0)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config_or_portfolio(args.portfolio)
    problems = [
        "--requests must be >= 1" if args.requests < 1 else "",
        "--batch and --sample-every must be >= 1" if min(args.batch, args.sample_every) < 1 else "",
        "--input-bytes must be >= 1" if args.input_bytes < 1 else "",
        f"--tiers-visited must be in [1, {len(config.tiers)}]"
        if not 1 <= args.tiers_visited <= len(config.tiers)
        else "",
    ]
    if any(problems):
        print(f"broker_memory: {next(p for p in problems if p)}", file=sys.stderr)
        return 2
    console = Console()
    load_before = os.getloadavg()[0]
    watch = CpuWatch(None)
    time.sleep(OTHER_WINDOW_S)
    other_before = watch.cores()
    run_dir = Path(tempfile.mkdtemp(prefix="tierflow-broker-memory-"))
    broker = EmbeddedBroker(log_dir=run_dir)
    ray_started = False
    try:
        bootstrap = broker.start()
        console.print(f"embedded broker on {bootstrap} (pid {broker.pid}); topics of {args.portfolio}")
        if args.pipeline:
            from infra.ray_cluster import start_ray

            with console.status("starting Ray on 127.0.0.1…"):
                ray_started = start_ray(RayConfig())
            report = asyncio.run(measure_pipeline(pipeline_config(config, run_dir), broker, args, console))
        else:
            report = asyncio.run(measure(config, broker, args, console))
    finally:
        if ray_started:
            from infra.ray_cluster import stop_ray

            stop_ray(ray_started)
        broker.stop()  # terminates the broker subprocess by its pid (never by name)
    shutil.rmtree(run_dir, ignore_errors=True)
    report = {
        "mode": "records",
        **report,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "portfolio": args.portfolio,
        "other_load": {
            "cores_before": other_before["other"],
            "busiest_before": other_before["busiest_others"],
            "cores_during": report["cores_used_while_writing"]["other"],
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "machine": {
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_mb": round(psutil.virtual_memory().total / (1 << 20)),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    console.print(report_table(report))
    wire = (
        f"{report['rss_per_wire_byte']:.2f} bytes of RSS per wire byte; "
        f"{report['bytes_per_request_on_wire']:,.0f} wire bytes per request; "
        if "rss_per_wire_byte" in report
        else ""
    )
    console.print(
        f"[bold]{report['mb_per_million']:,.0f} MB per million requests[/] "
        f"(R² {report['fit']['r2']:.3f}; {wire}{report['records_per_request']:.1f} records and "
        f"{report['tiers_visited']} tiers per request); {report['requests']:,} requests in {report['seconds']:.0f} s"
        + (" [yellow](stopped by --max-seconds)[/]" if report["stopped_by_time_bound"] else "")
    )
    if "after_delete" in report:
        gone = report["after_delete"]
        low, high = gone["rss_mb_after_deleting_the_topics"], gone["rss_mb_after_rewriting"]
        console.print(
            f"topics deleted: broker back to {low:,.0f} MB (from {report['rss_mb_settled']:,.0f}); "
            f"{gone['rewritten_requests']:,} requests written to fresh topics: {high:,.0f} MB "
            f"(+{high - low:,.0f} MB, {gone['growth_mb_expected_at_the_measured_rate']:,.0f} expected "
            "at the rate above)"
        )
    load, cores = report["other_load"], report["cores_used_while_writing"]
    console.print(
        f"cores: broker {cores['broker']:.2f}, driver {cores['driver']:.2f}, "
        f"rest of ours {cores['ours (rest)']:.2f}, other {cores['other']:.2f}; "
        f"load average {load['loadavg_1m_before']} before, {load['loadavg_1m_after']} after"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
