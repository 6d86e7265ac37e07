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
between the last pass and the first failure, ``max_probes`` probes in all; the
pipeline drains between probes. Used by ``pipeline_throughput.py``, which deploys the
``simulated`` and the ``headlines`` portfolios for it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from infra.client import RequestProducer, ResultCollector
from infra.datasets import Item
from policies.window import percentile_summary
from topics.messages import Request

P99_BOUND_MS = 1000.0
SENT_SHARE = 0.95
SETTLE_S = 15.0
"""After the last send, how long a probe waits for its stragglers before it counts as failed."""
PACE_HZ = 50
"""Send ticks per second."""
DRAIN_S = 120.0
"""Bound on waiting for a failed probe's backlog before the next probe starts."""


@dataclass
class Probe:
    rate: float
    sent_rps: float
    requests: int
    settled: int
    latency_ms: dict[str, float]
    passed: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": round(self.rate, 1),
            "sent_rps": round(self.sent_rps, 1),
            "requests": self.requests,
            "settled": self.settled,
            "latency_ms": self.latency_ms,
            "passed": self.passed,
            "why": self.why,
        }


@dataclass
class SustainedSearch:
    """Probes one running pipeline through ``producer`` and ``collector`` (both started by the caller)."""

    producer: RequestProducer
    collector: ResultCollector
    items: list[Item]
    probe_s: float = 60.0
    probes: list[Probe] = field(default_factory=list)

    async def probe(self, rate: float, label: str) -> Probe:
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
            await self.producer.send_many(batch)
        sending = time.monotonic() - started
        missing = await self.collector.wait_for(set(ids), SETTLE_S)
        found = self.collector.collected.results
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
        if missing:  # let the backlog drain so the next probe starts from an empty pipeline
            await self.collector.wait_for(missing, DRAIN_S)
        probe = Probe(rate, sent_rps, count, count - len(missing), summary, passed, why)
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
