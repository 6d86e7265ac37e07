"""The highest paced rate a pipeline holds: p99 end-to-end latency under 1 s for a whole probe.

Maximum-rate throughput says how fast a backlog drains; a user streaming live traffic
asks something else: at what steady rate does every request still come back within a
second? This module answers it for one deployed pipeline with its configuration as
shipped (default batch size, one replica per pool, the portfolio's tiers and their
model time). It probes rates for ``probe_s`` seconds each, every request stamped
when it is sent, and a probe passes when

* the sender kept up (at least 95% of the rate was sent),
* the p99 of ``Result.latency_ms`` over every request of the probe is under 1 s, and
* every request had its result (or dead letter) within ``SETTLE_S`` after the last send:
  a backlog that grows through the probe shows up as latency, so a passing probe
  also had bounded lag.

The search doubles the rate from ``start_rps`` until a probe fails, then bisects
between the last pass and the first failure, ``max_probes`` probes in all. Every probe
runs on a freshly deployed pipeline with fresh topics (``deploy``): the embedded broker
slows down with the batches a partition holds (a fetch takes 0.3 s at 20,000 of them,
see ``broker_batches.py``), so probes sharing topics would each inherit the batches of
the ones before, and a later, slower probe could fail where an earlier, faster one
held — the order of the probes, not the rate, would decide. Used by
``pipeline_throughput.py``, which deploys the ``simulated`` and the ``headlines``
portfolios for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from infra.client import RequestProducer, ResultCollector
from infra.datasets import Item
from policies.window import percentile_summary
from topics.messages import Request
from topics.reader import TopicReader

P99_BOUND_MS = 1000.0
SENT_SHARE = 0.95
SETTLE_S = 15.0
"""After the last send, how long a probe waits for its stragglers before it counts as failed."""
PACE_HZ = 50
"""Send ticks per second."""
SHOWN_UNSETTLED = 10
"""How many unsettled requests a probe traces through the topics."""


@dataclass(frozen=True)
class ProbeTarget:
    """A freshly deployed pipeline's way in and out, and where to look for a request that never came out."""

    producer: RequestProducer
    collector: ResultCollector
    kafka: dict[str, Any]
    topics: list[str]
    """The pipeline's data topics (control left out), read from their beginning to find a missing request."""
    stage_stats: Callable[[], Awaitable[dict[str, list[dict[str, Any]]]]]
    """Every replica's counters, by pool (``Pipeline.stats``)."""


Deploy = Callable[[str], AbstractAsyncContextManager[ProbeTarget]]
"""Deploys a fresh pipeline for the probe named by its argument and yields its :class:`ProbeTarget`
(producer and collector started); leaving the context stops the pipeline and deletes its topics."""


async def sightings(kafka: dict[str, Any], topics: list[str], ids: set[str]) -> dict[str, list[str]]:
    """Where each of ``ids`` was written, as ``topic[partition]@offset`` in order, from every topic's beginning.

    A request with no result within the bound is either slow or lost; the last topic it
    reached names the stage that held it.
    """
    keys = {request_id.encode(): request_id for request_id in ids}
    seen: dict[str, list[str]] = {request_id: [] for request_id in ids}
    async with TopicReader(kafka, topics) as reader:
        async for batch in reader.read_to_end():
            for record in batch:
                if (request_id := keys.get(record.key or b"")) is not None:
                    topic = record.topic.split(".", 1)[-1]  # without the namespace
                    seen[request_id].append(f"{topic}[{record.partition}]@{record.offset}")
    return seen


@dataclass
class Probe:
    rate: float
    sent_rps: float
    requests: int
    settled: int
    latency_ms: dict[str, float]
    passed: bool
    why: str
    unsettled: dict[str, list[str]] = field(default_factory=dict)
    """Up to ``SHOWN_UNSETTLED`` requests without a result, and the topics each was written to."""
    holes: dict[str, int] = field(default_factory=dict)
    """Fetches the stages read again past an offset hole, and holes accepted (``topics/gaps.py``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": round(self.rate, 1),
            "sent_rps": round(self.sent_rps, 1),
            "requests": self.requests,
            "settled": self.settled,
            "latency_ms": self.latency_ms,
            "passed": self.passed,
            "why": self.why,
            **({"unsettled": self.unsettled} if self.unsettled else {}),
            "holes": self.holes,
        }


@dataclass
class SustainedSearch:
    """Probes rates, each on a pipeline ``deploy`` starts fresh for it."""

    deploy: Deploy
    items: list[Item]
    probe_s: float = 60.0
    probes: list[Probe] = field(default_factory=list)

    async def probe(self, rate: float, label: str) -> Probe:
        async with self.deploy(label) as target:
            return await self._probe(target, rate, label)

    async def _probe(self, target: ProbeTarget, rate: float, label: str) -> Probe:
        producer, collector = target.producer, target.collector
        count = max(1, int(rate * self.probe_s))
        ids = [f"{label}-{i}" for i in range(count)]
        step = max(1, round(rate / PACE_HZ))
        started = time.monotonic()
        for lo in range(0, count, step):
            await asyncio.sleep(max(0.0, started + lo / rate - time.monotonic()))
            now = time.time()
            batch = [
                Request(id=ids[i], input=self.items[i % len(self.items)].text, created_at=now)
                for i in range(lo, min(count, lo + step))
            ]
            await producer.send_many(batch)
        sending = time.monotonic() - started
        missing = await collector.wait_for(set(ids), SETTLE_S)
        found = collector.collected.results
        latencies = [found[i].latency_ms for i in ids if i in found]
        summary = percentile_summary(latencies)
        sent_rps = count / sending if sending > 0 else rate
        if missing:
            passed, why = False, f"{len(missing)} of {count} unsettled {SETTLE_S:.0f} s after the last send"
        elif sent_rps < SENT_SHARE * rate:
            passed, why = False, f"the sender reached only {sent_rps:.0f}/s"
        elif summary["p99"] >= P99_BOUND_MS:
            passed, why = False, f"p99 {summary['p99']:.0f} ms >= {P99_BOUND_MS:.0f} ms"
        else:
            passed, why = True, f"p99 {summary['p99']:.0f} ms"
        shown = set(sorted(missing)[:SHOWN_UNSETTLED])
        unsettled = await sightings(target.kafka, target.topics, shown) if shown else {}
        replicas = [r for pool in (await target.stage_stats()).values() for r in pool]
        holes = {key: sum(r.get(key, 0) for r in replicas) for key in ("holes_refetched", "holes_accepted")}
        probe = Probe(rate, sent_rps, count, count - len(missing), summary, passed, why, unsettled, holes)
        self.probes.append(probe)
        return probe

    async def search(self, start_rps: float, max_probes: int, console: Console, name: str) -> dict[str, Any]:
        """Double from ``start_rps`` to the first failure, then bisect; the best passing rate wins."""
        best: Probe | None = None
        low, high, rate = 0.0, 0.0, start_rps
        for n in range(max_probes):
            what = f"{name}: probing {rate:.0f} requests/s for {self.probe_s:.0f} s ({n + 1}/{max_probes})…"
            with console.status(what):
                probe = await self.probe(rate, f"{name}-p{n}-{int(rate)}")
            console.print(f"  {name}: {rate:.0f}/s {'held' if probe.passed else 'not held'} ({probe.why})")
            if probe.passed:
                best = probe if best is None or probe.rate > best.rate else best
                low = rate
                rate = rate * 2 if not high else (low + high) / 2
            else:
                high = rate
                rate = (low + high) / 2 if low else rate / 2
            if high and low and high - low <= 0.1 * low:
                break
        return {
            "sustained_rps": round(best.rate, 1) if best else 0.0,
            "sustained_p99_ms": best.latency_ms["p99"] if best else None,
            "probe_s": self.probe_s,
            "rule": f"sent >= {SENT_SHARE:.0%} of the rate, every request settled within {SETTLE_S:.0f} s of the "
            f"last send, p99 < {P99_BOUND_MS:.0f} ms over the probe",
            "probes": [probe.as_dict() for probe in self.probes],
        }
