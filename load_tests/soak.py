"""Soak test: steady traffic for many minutes; is anything lost, delivered twice, or growing?

One embedded broker and one local Ray (both started here, stopped in ``finally``), one
pipeline of a portfolio (``simulated`` by default: three parametric tiers with their model
latencies, the budget controller on, a results sink writing to a file in the run folder), and
a client that sends ``--rate`` requests per second with unique ids for ``--minutes`` minutes,
paced in 50 ticks a second (not in bursts), while a :class:`~infra.client.ResultCollector`
reads the results. Every ``--sample-every`` seconds (10) it records:

* the resident memory (``/proc``, as ``load_tests/chaos.py`` reads it) and the cores used
  since the last sample of every process: the broker, each stage replica (its pid from
  ``Pipeline.pool_stats``, labelled ``worker.small[0]``), the budget controller, Ray's
  ``gcs_server``, ``raylet`` and agents, and this driver;
* the consumer lag of every stage pool, as ``tierflow status`` defines it (``infra.status``:
  end offset minus committed offset over the pool's topics), without reading the results
  and control topics each time as a status snapshot does;
* requests sent and answered, the latency percentiles of the results of the interval, the
  machine's load average and the cores used by processes this script did not start.

When the time is up it stops sending and waits (``--drain-timeout``) for the remaining
results and for the lag to reach 0, then accounts for every id: ``lost`` (sent, with neither
a result nor a dead letter), ``delivered_duplicates`` (ids the sink wrote to its results file
more than once, counted with ``tests/history.delivered_counts``), ``raw_duplicates`` (repeats
on the results topic that the client ignored, legal under at-least-once), ``undelivered``
(answered on the topic but not in the sink's file) and ``phantom`` (in the file, never sent).

``rss_slope_mb_per_h`` is, per process, the least-squares slope of RSS against time
(``load_tests/broker_memory.fit_line``) over the samples taken while traffic ran, after the
warm-up (``--warmup``, default 2 minutes or a third of the run, whichever is shorter); a
process restarted after the warm-up (a new pid under the same label) is fitted on its last
pid's samples and flagged. The goal of a 60-minute run: 0 lost, 0 delivered twice, every
stage process (the replicas and the controller) under 5 MB an hour. The embedded broker is no
stage: its memory engine keeps every record (README, "When to move to a real cluster"), so
its slope is the traffic's size, reported beside the rest. The driver keeps one flag and one
latency per request in arrays allocated at start, so its slope is the client's own.

A stall — a sample interval in which results came at under a tenth of the rate while requests
were sent — is listed in ``stalls`` with the pool whose lag grew (the stage that stopped taking
records); with no result at all for ``--abort-on-stall`` seconds (300) the traffic stops early, so
an hour is not spent sending into a stuck pipeline, and the run fails.

Exit status: 0 when every request is accounted for exactly once (and, with
``--fail-on-slope``, every stage under the slope goal); 1 when not; 2 for a bad argument or
a broker, Ray or pipeline that cannot start; 130 after Ctrl-C, which stops sending, drains
briefly (a second Ctrl-C skips that) and still writes the JSON, marked ``"interrupted": true``.

Usage::

    .venv/bin/python load_tests/soak.py --minutes 2 --rate 50 --json load_tests/results/soak_short_50.json
    .venv/bin/python load_tests/soak.py --minutes 60 --rate 300 --json load_tests/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import Config, load_config_or_portfolio
from infra.status.reader import StatusReader
from load_tests.broker_memory import CpuWatch, fit_line
from load_tests.chaos import rss_mb
from load_tests.pipeline_throughput import VALUE_BYTES, _busy_ticks, _descendants, _text
from policies.window import percentile_summary
from tests.history import delivered_counts
from topics.errors import BrokerError, TierflowError
from topics.messages import Request, Result

DEFAULT_JSON = "load_tests/results/soak.json"
SAMPLE_EVERY_S = 10.0
PACE_HZ = 50
"""Default send ticks per second (``--sends-per-s``): ``rate / 50`` requests per tick, each tick
acknowledged before the next."""
WARMUP_S = 120.0
"""Samples in the first two minutes (group joins, first allocations, caches filling) are not fitted."""
SLOPE_GOAL_MB_PER_H = 5.0
BROKER_MB_PER_MILLION = 6_041.0
"""The embedded broker's growth per million requests at 200/s (README, Benchmarks): for the pre-flight estimate."""
KEPT_UP_SHARE = 0.95
"""The sender kept up when it sent at least this share of ``rate`` …"""
LAG_GROWTH_S = 1.0
"""… and the pipeline kept up when its lag, fitted after the warm-up, grew by less than this many seconds of
traffic over the fitted window (a bounded lag fits a flat line; 600/s on the shared 2-core machine grew ~2 s
of traffic in 2 minutes)."""
READY_S = 180.0
INTERRUPTED_DRAIN_S = 15.0
STALL_SHARE = 0.1
"""A sample interval in which results came at less than this share of ``rate`` (while sending) is a stall."""
ABORT_ON_STALL_S = 300.0
RAY_PROCESSES = {
    "gcs_server": "ray.gcs_server",
    "raylet": "ray.raylet",
    "ray::DashboardAgent": "ray.dashboard_agent",
    "ray::RuntimeEnvAgent": "ray.runtime_env_agent",
    "dashboard/dashboard.py": "ray.dashboard",
    "autoscaler/_private/monitor.py": "ray.monitor",
    "log_monitor.py": "ray.log_monitor",
}
"""Substring of a Ray daemon's command line -> its label (the first match wins)."""


class SoakError(TierflowError):
    """The soak could not run as asked (an expected failure: one line, no traceback)."""


# --------------------------------------------------------------------------- measuring


class LagProbe:
    """Consumer lag per stage pool, exactly as ``tierflow status`` reads it (offsets only, no records:
    :meth:`infra.status.reader.StatusReader.lag`, high watermarks minus committed offsets)."""

    def __init__(self, kafka: Mapping[str, Any], config: Config) -> None:
        self._reader = StatusReader(kafka, config)

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def lag(self) -> dict[str, int]:
        return (await self._reader.lag())[0]


@dataclass
class Tally:
    """What the client saw, in memory fixed at start: one flag and one latency per request id."""

    prefix: str
    capacity: int
    answered: np.ndarray = field(init=False)
    latency_ms: np.ndarray = field(init=False)
    sent: int = 0
    count: int = 0
    """Ids answered (first result seen)."""
    raw_duplicates: int = 0
    foreign: int = 0
    status: Counter[str] = field(default_factory=Counter)
    tiers_visited: int = 0
    interval: list[float] = field(default_factory=list)
    """Latencies of the results since the last sample (for the per-sample percentiles)."""

    def __post_init__(self) -> None:
        # np.full writes every page now, so the arrays are in the driver's RSS from the start, not as it fills.
        self.answered = np.full(self.capacity, False)
        self.latency_ms = np.full(self.capacity, np.nan, dtype=np.float32)

    def request_id(self, index: int) -> str:
        return f"{self.prefix}-{index:09d}"

    def index(self, request_id: str) -> int | None:
        head, _, tail = request_id.rpartition("-")
        if head != self.prefix or not tail.isdigit() or int(tail) >= self.capacity:
            return None
        return int(tail)

    def take(self, result: Result) -> None:
        i = self.index(result.request_id)
        if i is None:
            self.foreign += 1
            return
        if self.answered[i]:
            self.raw_duplicates += 1
            return
        self.answered[i] = True
        self.latency_ms[i] = result.latency_ms
        self.count += 1
        self.status[str(result.status)] += 1
        self.tiers_visited += len(result.path)
        self.interval.append(result.latency_ms)


async def collect_results(collector: ResultCollector, tally: Tally, stop: asyncio.Event) -> None:
    """Read results until ``stop``; each first result goes into ``tally`` and leaves the collector's dict.

    The collector keeps every result by id (its first-result-wins rule); an hour of results would
    grow this driver by a gigabyte and hide a leak of its own, so the id is marked in ``tally``'s
    fixed array instead, where a repeat still counts as a raw duplicate.
    """
    results = collector.collected.results
    while not stop.is_set():
        try:
            settled = await collector.poll(timeout_ms=200)
        except (KafkaError, BrokerError, OSError):
            await asyncio.sleep(0.5)  # the broker away for a moment: read on, the offsets are kept
            continue
        for request_id in settled:
            result = results.pop(request_id, None)  # None: a dead letter
            if result is not None:
                tally.take(result)


async def send_steady(
    producer: RequestProducer,
    tally: Tally,
    rate: float,
    seconds: float,
    stop: asyncio.Event,
    text: str,
    pace_hz: float = PACE_HZ,
) -> dict[str, float]:
    """Send ``rate`` requests a second for ``seconds`` (or until ``stop``), stamped when sent.

    Every tick (``pace_hz`` a second) sends what the clock says is due, at most a second's worth,
    each batch acknowledged before the next: a slow acknowledgement is caught up rather than lost
    from the rate, and how far the sender ever fell behind is returned.
    """
    started = next_tick = time.monotonic()
    behind = 0.0
    while not stop.is_set():
        now = time.monotonic()
        if now - started >= seconds:
            break
        due = min(tally.capacity, math.floor(rate * (now - started)) + 1)
        behind = max(behind, (due - tally.sent) / rate)
        count = min(due - tally.sent, max(1, math.ceil(rate)))
        if count > 0:
            stamp = time.time()
            first = tally.sent
            await producer.send_many(
                [Request(id=tally.request_id(i), input=text, created_at=stamp) for i in range(first, first + count)]
            )
            tally.sent = first + count
        next_tick = max(next_tick + 1.0 / pace_hz, time.monotonic())
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    return {"sent": tally.sent, "seconds": time.monotonic() - started, "max_behind_s": behind}


async def watch_progress(tally: Tally, stall_s: float, stop: asyncio.Event, console: Console) -> float | None:
    """Set ``stop`` when no result has arrived for ``stall_s`` seconds while requests were sent; return when.

    A pipeline that answers nothing for minutes has failed its soak whatever comes next; an hour's
    run ends early instead, and the report shows which pool's lag grew.
    """
    started = time.monotonic()
    answered, sent, since = tally.count, tally.sent, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if tally.count != answered or tally.sent == sent:
            answered, sent, since = tally.count, tally.sent, time.monotonic()
        elif time.monotonic() - since >= stall_s:
            console.print(
                f"[red]no result for {stall_s:.0f} s while {tally.sent - sent:,} requests were sent: "
                "the pipeline stalled; stopping the traffic[/]"
            )
            stop.set()
            return round(since - started, 1)
    return None


class Sampler:
    """Every ``every_s`` seconds: RSS and cores per process, lag per pool, load; a progress line each time."""

    def __init__(
        self, pipeline: Any, broker: EmbeddedBroker, probe: LagProbe, tally: Tally, console: Console, every_s: float
    ) -> None:
        self.pipeline = pipeline
        self.broker = broker
        self.probe = probe
        self.tally = tally
        self.console = console
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.phase = "traffic"
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        self._last: tuple[float, int, dict[int, int]] | None = None
        self._label_ticks: dict[str, tuple[int, int]] = {}
        self._lock = asyncio.Lock()
        """The grid and the end of the traffic may ask for a sample at once: one at a time."""
        self.failures = 0
        self._stages: dict[str, int] = {}
        """Label -> pid of every stage replica seen: one too busy (or stopped) to answer ``stats`` in time is
        still sampled while its process lives."""

    async def processes(self) -> dict[str, int]:
        """Label -> pid of every process this run started, and this driver."""
        found = {"broker": self.broker.pid or 0, "driver": os.getpid()}
        for name, replicas in (await self.pipeline.stats()).items():
            for stats in replicas:
                if "pid" in stats:
                    self._stages[f"{name}[{stats.get('replica', 0)}]"] = int(stats["pid"])
        found |= {label: pid for label, pid in self._stages.items() if psutil.pid_exists(pid)}
        stage_pids = set(found.values())
        for pid in sorted(_descendants(os.getpid()) - stage_pids):
            try:
                command = " ".join(psutil.Process(pid).cmdline())
            except psutil.Error:
                continue
            if command.startswith("ray::ControllerActor"):
                found["controller"] = pid
                continue
            label = next((label for key, label in RAY_PROCESSES.items() if key in command), None)
            if label is not None and label not in found:
                found[label] = pid
        return found

    async def sample(self, min_gap_s: float = 0.0) -> dict[str, Any]:
        """Take a sample, or return the last one when it is younger than ``min_gap_s``."""
        async with self._lock:
            if self.samples and self._last is not None and time.monotonic() - self._last[0] < min_gap_s:
                return self.samples[-1]
            return await self._sample()

    async def _sample(self) -> dict[str, Any]:
        now = time.monotonic()
        sent, answered, latencies = self.tally.sent, self.tally.count, self.tally.interval
        self.tally.interval = []  # the counts as of ``now``; asking the stages for their pids takes a moment
        pids = await self.processes()
        ours = {pid: _busy_ticks(pid) for pid in _descendants(os.getpid()) | {os.getpid()}}
        machine = _busy_ticks()
        rss = {label: round(rss_mb(pid), 1) for label, pid in pids.items()}
        cores: dict[str, float | None] = {}
        wall_ticks = None if self._last is None else max(1e-9, (now - self._last[0]) * self.clock_ticks)
        for label, pid in pids.items():
            ticks = ours.get(pid, _busy_ticks(pid))
            previous = self._label_ticks.get(label)
            cores[label] = (
                round((ticks - previous[1]) / wall_ticks, 3)
                if wall_ticks and previous is not None and previous[0] == pid
                else None
            )
            self._label_ticks[label] = (pid, ticks)
        other = machine_cores = None
        if self._last is not None and wall_ticks is not None:
            _, last_machine, last_ours = self._last
            ours_used = sum(max(0, t - last_ours.get(pid, 0)) for pid, t in ours.items())
            machine_cores = round((machine - last_machine) / wall_ticks, 2)
            other = round(max(0.0, (machine - last_machine - ours_used) / wall_ticks), 2)
        self._last = (now, machine, ours)
        try:
            lag: dict[str, int] | None = await asyncio.wait_for(self.probe.lag(), timeout=self.every_s)
        except (KafkaError, TimeoutError, OSError):
            lag = None
        sample = {
            "t_s": round(now - self.started, 1),
            "phase": self.phase,
            "sent": sent,
            "answered": answered,
            "lag": None if lag is None else sum(lag.values()),
            "lag_by_pool": lag,
            "latency_ms": {**percentile_summary(latencies, 1), "results": len(latencies)},
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "machine_cores": machine_cores,
            "other_cores": other,
            "pids": pids,
            "rss_mb": rss,
            "cores": cores,
        }
        self.samples.append(sample)
        self._print(sample)
        return sample

    def _print(self, s: dict[str, Any]) -> None:
        minutes, seconds = divmod(int(s["t_s"]), 60)
        stages = [mb for label, mb in s["rss_mb"].items() if is_stage(label)]
        rate = ""
        if len(self.samples) > 1:
            before = self.samples[-2]
            dt = max(1e-9, s["t_s"] - before["t_s"])
            rate = f" ({(s['sent'] - before['sent']) / dt:.0f}/s → {(s['answered'] - before['answered']) / dt:.0f}/s)"
        lag = "?" if s["lag"] is None else f"{s['lag']:,}"
        stalled = ""
        if len(self.samples) > 1 and s["answered"] == self.samples[-2]["answered"] < s["sent"]:
            stalled = "  [red]no results in this interval[/]"
        other = "" if s["other_cores"] is None else f", other {s['other_cores']:.2f} cores"
        self.console.print(
            f"  {minutes:3d}:{seconds:02d} {s['phase']:<7} sent {s['sent']:,} answered {s['answered']:,}{rate}"
            f"  lag {lag}  p99 {s['latency_ms']['p99']:.0f} ms  broker {s['rss_mb'].get('broker', 0):,.0f} MB"
            f"  stages ≤ {max(stages, default=0):,.0f} MB  load {s['loadavg'][0]:.2f}{other}{stalled}",
            highlight=False,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Sample on a fixed grid (one now, then every ``every_s``) until ``stop``."""
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                await self.sample(min_gap_s=min(1.0, self.every_s / 2))
            except Exception as exc:  # noqa: BLE001 - one failed look must not end the soak; the gap shows
                self.failures += 1
                self.console.print(f"[yellow]sample failed: {type(exc).__name__}: {exc}[/]", highlight=False)
            next_at += self.every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - time.monotonic()))


# --------------------------------------------------------------------------- analysis


def rss_fits(samples: Sequence[dict[str, Any]], warmup_s: float) -> dict[str, dict[str, Any]]:
    """Per process: the RSS slope in MB per hour over the traffic samples after the warm-up, and its context."""
    steady = [s for s in samples if s["phase"] == "traffic" and s["t_s"] >= warmup_s]
    labels = list(dict.fromkeys(label for s in samples for label in s["rss_mb"]))
    fits: dict[str, dict[str, Any]] = {}
    for label in labels:
        points = [(s["t_s"] / 3600.0, s["rss_mb"][label], s["pids"][label]) for s in steady if label in s["rss_mb"]]
        points = [p for p in points if p[1] > 0]  # 0: the process was gone when sampled
        pids = list(dict.fromkeys(p[2] for p in points))
        restarted = len(pids) > 1
        if restarted:
            points = [p for p in points if p[2] == pids[-1]]
        every = [s["rss_mb"][label] for s in samples if label in s["rss_mb"] and s["rss_mb"][label] > 0]
        entry: dict[str, Any] = {
            "slope_mb_per_h": None,
            "r2": None,
            "samples_fitted": len(points),
            "first_mb": points[0][1] if points else None,
            "last_mb": points[-1][1] if points else None,
            "peak_mb": max(every, default=None),
            "pids": list(dict.fromkeys(s["pids"][label] for s in samples if label in s["pids"])),
            "restarted_after_warmup": restarted,
        }
        if len(points) >= 3 and points[-1][0] > points[0][0]:
            slope, _, r2 = fit_line([p[0] for p in points], [p[1] for p in points])
            entry["slope_mb_per_h"] = round(slope, 2)
            entry["r2"] = round(r2, 3)
        fits[label] = entry
    return fits


def is_stage(label: str) -> bool:
    """Stage processes: the pools' replicas and the controller (not the broker, Ray's daemons or the driver)."""
    return label == "controller" or "[" in label


def mean_cores(samples: Sequence[dict[str, Any]], warmup_s: float) -> dict[str, float]:
    steady = [s for s in samples if s["phase"] == "traffic" and s["t_s"] >= warmup_s]
    labels = list(dict.fromkeys(label for s in steady for label in s["cores"]))
    out = {}
    for label in labels:
        values = [s["cores"][label] for s in steady if s["cores"].get(label) is not None]
        if values:
            out[label] = round(sum(values) / len(values), 3)
    for key in ("machine_cores", "other_cores"):
        values = [s[key] for s in steady if s[key] is not None]
        if values:
            out[key.removesuffix("_cores")] = round(sum(values) / len(values), 2)
    return out


def lag_growth_per_s(samples: Sequence[dict[str, Any]], warmup_s: float) -> float | None:
    points = [(s["t_s"], s["lag"]) for s in samples if s["phase"] == "traffic" and s["t_s"] >= warmup_s]
    points = [p for p in points if p[1] is not None]
    if len(points) < 3:
        return None
    slope, _, _ = fit_line([p[0] for p in points], [float(p[1]) for p in points])
    return round(slope, 3)


def find_stalls(samples: Sequence[dict[str, Any]], rate: float) -> list[dict[str, Any]]:
    """Runs of traffic-sample intervals in which results came at under ``STALL_SHARE`` of the rate.

    Each names the pool whose lag grew most over it: the stage that stopped taking records.
    """
    traffic = [s for s in samples if s["phase"] == "traffic"]
    stalls: list[dict[str, Any]] = []
    for before, after in itertools.pairwise(traffic):
        dt = after["t_s"] - before["t_s"]
        if dt <= 0 or (after["answered"] - before["answered"]) / dt >= STALL_SHARE * rate:
            continue
        if stalls and stalls[-1]["to_s"] == before["t_s"]:
            stalls[-1]["to_s"] = after["t_s"]
            stalls[-1]["_last"] = after
        else:
            stalls.append({"from_s": before["t_s"], "to_s": after["t_s"], "_first": before, "_last": after})
    for stall in stalls:
        first, last = stall.pop("_first"), stall.pop("_last")
        stall["seconds"] = round(stall["to_s"] - stall["from_s"], 1)
        growth = {
            pool: lag - (first["lag_by_pool"] or {}).get(pool, 0) for pool, lag in (last["lag_by_pool"] or {}).items()
        }
        stall["lag_growth_by_pool"] = growth
        stall["stalled_pool"] = max(growth, key=lambda pool: growth[pool]) if growth else None
    return stalls


def account(tally: Tally, sent: int, dead_ids: set[str], results_path: str) -> dict[str, Any]:
    """Every sent id: answered (result or dead letter), lost, delivered by the sink once, twice, never."""
    dead = np.full(max(1, sent), False)
    for request_id in dead_ids:
        i = tally.index(request_id)
        if i is not None and i < sent:
            dead[i] = True
    answered = tally.answered[:sent]
    settled = answered | dead[:sent]
    lost = np.flatnonzero(~settled)
    delivered = delivered_counts(results_path) if results_path else Counter()
    in_file = np.full(max(1, sent), False)
    phantom = []
    for request_id in delivered:
        i = tally.index(request_id)
        if i is None or i >= sent:
            phantom.append(request_id)
        else:
            in_file[i] = True
    undelivered = np.flatnonzero(answered & ~in_file[:sent])
    twice = sum(count - 1 for count in delivered.values())
    return {
        "requests": sent,
        "answered": int(settled.sum()),
        "results": int(answered.sum()),
        "dead_letters": len(dead_ids),
        "delivered": len(delivered),
        "lost": len(lost),
        "lost_examples": [tally.request_id(int(i)) for i in lost[:5]],
        "delivered_duplicates": twice,
        "ids_delivered_more_than_once": sum(count > 1 for count in delivered.values()),
        "undelivered": len(undelivered),
        "undelivered_examples": [tally.request_id(int(i)) for i in undelivered[:5]],
        "phantom": len(phantom),
        "phantom_examples": phantom[:5],
    }


# --------------------------------------------------------------------------- the run


@dataclass
class Options:
    minutes: float
    rate: float
    portfolio: str
    json_path: str
    warmup_s: float
    sample_every_s: float
    drain_timeout_s: float
    seed: int
    fail_on_slope: bool
    run_dir: str
    abort_on_stall_s: float
    sends_per_s: float = PACE_HZ


async def soak(config: Config, broker: EmbeddedBroker, options: Options, console: Console) -> dict[str, Any]:
    from infra.pipeline import Pipeline  # imports ray: after main() set Ray's environment

    seconds = options.minutes * 60.0
    kafka = kafka_options(config.broker, broker.bootstrap)
    tally = Tally(prefix=f"soak-{uuid.uuid4().hex[:8]}", capacity=math.floor(options.rate * seconds) + 2)
    interrupted, abort, stop_traffic = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if interrupted.is_set():
            abort.set()
            console.print("[yellow]second interrupt: skipping the drain[/]")
        else:
            interrupted.set()
            stop_traffic.set()
            console.print("[yellow]interrupted: stopping the traffic, draining briefly, then writing the JSON[/]")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    pipeline = Pipeline(config, broker.bootstrap)
    probe = LagProbe(kafka, config)
    producer = RequestProducer(kafka, config.layout)
    collector = ResultCollector(kafka, config.layout, fetch_max_wait_ms=config.broker.fetch_max_wait_ms)
    stop_collecting, stop_sampling = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    watchdog: asyncio.Task[float | None] | None = None
    try:
        with console.status("starting the pipeline's stage actors on Ray…"):
            await asyncio.wait_for(pipeline.start(ready_timeout_s=READY_S), timeout=READY_S + 30)
        await probe.start()
        await collector.start()
        await producer.start()
        sampler = Sampler(pipeline, broker, probe, tally, console, options.sample_every_s)
        noise = CpuWatch(broker.pid)
        load_start = os.getloadavg()
        console.print(
            f"sending {options.rate:g} requests/s for {options.minutes:g} min "
            f"(warm-up {options.warmup_s:.0f}s not fitted); a line every {options.sample_every_s:g}s:"
        )
        tasks.append(asyncio.create_task(collect_results(collector, tally, stop_collecting)))
        tasks.append(asyncio.create_task(sampler.run(stop_sampling)))
        text = _text(random.Random(options.seed), VALUE_BYTES)
        watchdog = (
            asyncio.create_task(watch_progress(tally, options.abort_on_stall_s, stop_traffic, console))
            if options.abort_on_stall_s > 0
            else None
        )
        sending = await send_steady(producer, tally, options.rate, seconds, stop_traffic, text, options.sends_per_s)
        stop_traffic.set()
        stalled_since = await watchdog if watchdog is not None else None
        sent = int(sending["sent"])
        # The lag the moment traffic stopped (the grid's sample if it was just taken): the last traffic sample.
        end_of_traffic = await sampler.sample(min_gap_s=min(2.0, options.sample_every_s / 2))
        sampler.phase = "drain"
        drain_started = time.monotonic()
        lag_after: dict[str, int] | None = None
        while not abort.is_set():
            limit = INTERRUPTED_DRAIN_S if interrupted.is_set() else options.drain_timeout_s
            if time.monotonic() - drain_started >= min(limit, options.drain_timeout_s):
                break
            if tally.count + len(collector.collected.dead_ids) >= sent:
                with contextlib.suppress(KafkaError, TimeoutError, OSError):
                    lag_after = await asyncio.wait_for(probe.lag(), timeout=10)
                if lag_after is not None and sum(lag_after.values()) == 0:
                    break
            await asyncio.sleep(0.5)
        drained_in = time.monotonic() - drain_started
        cores_noise = noise.cores()
        stop_sampling.set()
        stop_collecting.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [
            f"{name} failed: {type(outcome).__name__}: {outcome}"
            for name, outcome in zip(("the result collector", "the sampler"), outcomes, strict=True)
            if isinstance(outcome, Exception)
        ]
        broker_resets = collector.broker_resets
        dead_ids = set(collector.collected.dead_ids)
        dead_reasons = Counter(letter.reason for letter in collector.collected.dead_letters)
        raw_duplicates = tally.raw_duplicates + collector.collected.raw_duplicates
        pool_counters = {
            name: {
                key: sum(int(s.get(key, 0)) for s in replicas)
                for key in ("consumed", "produced", "dead_letters", "commit_failures", "send_failures",
                            "process_failures")
            }
            for name, replicas in (await pipeline.stats()).items()
        }  # fmt: skip
    finally:
        for task in [*tasks, watchdog]:
            if task is not None:
                task.cancel()
        with console.status("stopping the pipeline…"):
            for client in (producer, collector, probe):
                with contextlib.suppress(Exception):
                    await client.stop()
            await pipeline.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    counts = account(tally, sent, dead_ids, config.results_path)
    samples = sampler.samples
    fits = rss_fits(samples, options.warmup_s)
    latencies = tally.latency_ms[:sent][tally.answered[:sent]]
    traffic = [s for s in samples if s["phase"] == "traffic"]
    lags = [s["lag"] for s in samples if s["lag"] is not None]
    stage_slopes = {k: v["slope_mb_per_h"] for k, v in fits.items() if is_stage(k)}
    worst_stage = max(
        ((k, v) for k, v in stage_slopes.items() if v is not None), key=lambda kv: kv[1], default=(None, None)
    )
    growth = lag_growth_per_s(samples, options.warmup_s)
    stalls = find_stalls(samples, options.rate)
    achieved = sent / max(1e-9, sending["seconds"])
    problems = []
    if counts["lost"]:
        problems.append(f"{counts['lost']} requests lost, e.g. {counts['lost_examples'][:3]}")
    if counts["delivered_duplicates"]:
        problems.append(f"{counts['delivered_duplicates']} deliveries of ids the sink had already delivered")
    if counts["undelivered"]:
        problems.append(f"{counts['undelivered']} results the sink never wrote, e.g. {counts['undelivered_examples']}")
    if counts["phantom"]:
        problems.append(f"{counts['phantom']} delivered ids never sent")
    if broker_resets:
        problems.append(f"the broker lost its data {broker_resets} time(s)")
    if stalled_since is not None:
        stalled = next((x for x in stalls if x["from_s"] <= stalled_since + options.sample_every_s), None)
        where = f" ({stalled['stalled_pool']}'s lag grew)" if stalled and stalled["stalled_pool"] else ""
        problems.append(
            f"the pipeline stalled: no result from {stalled_since:.0f} s for {options.abort_on_stall_s:.0f} s{where}; "
            "traffic stopped early"
        )
    if tally.foreign:
        problems.append(f"{tally.foreign} results for ids this run never made")
    problems += failed
    slope_ok = all(v is not None and v < SLOPE_GOAL_MB_PER_H for v in stage_slopes.values()) and bool(stage_slopes)
    return {
        "ok": not problems,
        "interrupted": interrupted.is_set(),
        "aborted_on_stall": stalled_since is not None,
        "problems": problems,
        **{k: v for k, v in counts.items() if not k.endswith("_examples")},
        "raw_duplicates": raw_duplicates,
        "foreign_results": tally.foreign,
        "failed_samples": sampler.failures,
        "dead_letter_reasons": dict(dead_reasons),
        "broker_resets": broker_resets,
        "rate": options.rate,
        "sends_per_s": options.sends_per_s,
        "minutes": options.minutes,
        "achieved_rate_rps": round(achieved, 1),
        "sending_s": round(sending["seconds"], 1),
        "sender_max_behind_s": round(sending["max_behind_s"], 2),
        "throughput_rps": round(tally.count / max(1e-9, sending["seconds"] + drained_in), 1),
        "latency_ms": {
            **percentile_summary(latencies.tolist(), 1),
            "max": round(float(latencies.max()), 1) if latencies.size else 0.0,
        },
        "status": dict(tally.status),
        "mean_tiers": round(tally.tiers_visited / max(1, tally.count), 3),
        "lag_end": end_of_traffic["lag"],
        "lag_end_by_pool": end_of_traffic["lag_by_pool"],
        "lag_after_drain": None if lag_after is None else sum(lag_after.values()),
        "lag_max": max(lags, default=None),
        "lag_growth_per_s_after_warmup": growth,
        "drained_in_s": round(drained_in, 1),
        "stalls": stalls,
        "longest_stall_s": max((x["seconds"] for x in stalls), default=0.0),
        "kept_up": achieved >= KEPT_UP_SHARE * options.rate
        and growth is not None
        and growth * max(0.0, sending["seconds"] - options.warmup_s) < LAG_GROWTH_S * options.rate,
        "kept_up_rule": (
            f"sent >= {KEPT_UP_SHARE:.0%} of the rate, and the lag's least-squares growth after the warm-up, "
            f"times the fitted window, below {LAG_GROWTH_S:g} s of traffic"
        ),
        "rss_slope_mb_per_h": {k: v["slope_mb_per_h"] for k, v in fits.items()},
        "rss_fit": fits,
        "slope_method": (
            "least-squares line of RSS (MB) against time (h) through the samples taken while traffic ran, "
            f"after the first {options.warmup_s:.0f} s (load_tests/broker_memory.fit_line); a process restarted "
            "after the warm-up is fitted on its last pid"
        ),
        "warmup_s": options.warmup_s,
        "goal": {
            "lost": counts["lost"] == 0,
            "delivered_duplicates": counts["delivered_duplicates"] == 0,
            "stage_rss_slopes_under_mb_per_h": SLOPE_GOAL_MB_PER_H,
            "stage_rss_slopes": slope_ok,
            "worst_stage": worst_stage[0],
            "worst_stage_slope_mb_per_h": worst_stage[1],
            "met": not problems and slope_ok,
        },
        "cpu_cores_mean": mean_cores(samples, options.warmup_s),
        "other_load": {
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "loadavg_1m_max": max((s["loadavg"][0] for s in traffic), default=None),
            "other_cores_during": cores_noise["other"],
            "busiest_others": cores_noise["busiest_others"],
        },
        "stage_counters": pool_counters,
        "sample_every_s": options.sample_every_s,
        "samples": samples,
    }


def summary_tables(report: dict[str, Any]) -> tuple[Table, Table]:
    processes = Table(title=f"memory per process (slope after the first {report['warmup_s']:.0f} s)")
    for column in ("process", "pid", "RSS first MB", "last MB", "peak MB", "slope MB/h", "R²", "cores"):
        processes.add_column(column, justify="left" if column == "process" else "right")
    cores = report["cpu_cores_mean"]
    for label, fit in report["rss_fit"].items():
        slope = fit["slope_mb_per_h"]
        style = "" if slope is None or not is_stage(label) else ("green" if slope < SLOPE_GOAL_MB_PER_H else "red")
        processes.add_row(
            label,
            ",".join(str(p) for p in fit["pids"]) + (" (restarted)" if fit["restarted_after_warmup"] else ""),
            "-" if fit["first_mb"] is None else f"{fit['first_mb']:,.1f}",
            "-" if fit["last_mb"] is None else f"{fit['last_mb']:,.1f}",
            "-" if fit["peak_mb"] is None else f"{fit['peak_mb']:,.1f}",
            "-" if slope is None else f"[{style}]{slope:,.1f}[/]" if style else f"{slope:,.1f}",
            "-" if fit["r2"] is None else f"{fit['r2']:.2f}",
            "-" if label not in cores else f"{cores[label]:.2f}",
        )
    overall = Table(title="soak", show_header=False)
    overall.add_column(justify="left")
    overall.add_column(justify="right")
    lat = report["latency_ms"]
    load = report["other_load"]
    goal = report["goal"]
    rows = [
        ("rate asked / achieved", f"{report['rate']:g} / {report['achieved_rate_rps']:g} req/s"),
        ("requests / answered / delivered", f"{report['requests']:,} / {report['answered']:,} / "
                                             f"{report['delivered']:,}"),
        ("lost / delivered twice", f"{report['lost']} / {report['delivered_duplicates']}"),
        ("raw duplicates / dead letters", f"{report['raw_duplicates']} / {report['dead_letters']}"),
        ("latency p50 / p95 / p99", f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} ms"),
        ("lag end / max / after drain", f"{report['lag_end']} / {report['lag_max']} / {report['lag_after_drain']}"),
        ("lag growth after warm-up", f"{_shown(report['lag_growth_per_s_after_warmup'])} records/s"),
        ("kept up", str(report["kept_up"])),
        (
            "worst stage RSS slope",
            f"{_shown(goal['worst_stage'])}: {_shown(goal['worst_stage_slope_mb_per_h'])} MB/h "
            f"(goal < {SLOPE_GOAL_MB_PER_H:g})",
        ),
        ("cores: machine / not ours", f"{_shown(cores.get('machine'))} / {_shown(cores.get('other'))}"),
        ("load average start → end (1m max)", f"{load['loadavg_at_start'][0]} → {load['loadavg_at_end'][0]} "
                                               f"({load['loadavg_1m_max']})"),
        ("interrupted", str(report["interrupted"])),
    ]  # fmt: skip
    for key, value in rows:
        overall.add_row(key, value)
    return processes, overall


def _shown(value: Any) -> str:
    """A report value for the table: ``-`` for none (too few samples after the warm-up)."""
    return "-" if value is None else str(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=60.0, metavar="M", help="minutes of traffic (default 60)")
    parser.add_argument("--rate", type=float, default=200.0, metavar="R", help="requests per second (default 200)")
    parser.add_argument("--json", default=DEFAULT_JSON, metavar="PATH", help=f"write the report here ({DEFAULT_JSON})")
    parser.add_argument(
        "--portfolio", default="simulated", metavar="NAME_OR_FILE", help="the pipeline's portfolio (default simulated)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        metavar="S",
        help=f"seconds of samples left out of the slopes (default {WARMUP_S:.0f}, or a third of a shorter run)",
    )
    parser.add_argument(
        "--sample-every", type=float, default=SAMPLE_EVERY_S, metavar="S", help="seconds between samples (default 10)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="after the traffic, wait this long at most for the remaining results and zero lag (default 180)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the request text (default 0)")
    parser.add_argument(
        "--sends-per-s",
        type=float,
        default=PACE_HZ,
        metavar="HZ",
        help=f"produce requests in this many acknowledged sends a second (default {PACE_HZ}); the embedded "
        "broker's fetches slow down once a partition holds ~20,000 batches, so a long run wants few",
    )
    parser.add_argument(
        "--fail-on-slope", action="store_true", help="exit 1 when a stage's RSS slope misses the 5 MB/h goal"
    )
    parser.add_argument(
        "--abort-on-stall",
        type=float,
        default=ABORT_ON_STALL_S,
        metavar="S",
        help=f"stop the traffic after S seconds of sending without a result (default {ABORT_ON_STALL_S:.0f}; 0: never)",
    )
    parser.add_argument("--run-dir", default="", metavar="DIR", help="keep the broker log and results file here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problems = [
        "--minutes must be > 0" if not args.minutes > 0 else "",
        "--rate must be > 0" if not args.rate > 0 else "",
        "--sample-every must be > 0" if not args.sample_every > 0 else "",
        "--drain-timeout must be >= 0" if not args.drain_timeout >= 0 else "",
        "--warmup must be >= 0" if args.warmup is not None and not args.warmup >= 0 else "",
        "--abort-on-stall must be >= 0" if not args.abort_on_stall >= 0 else "",
        "--sends-per-s must be > 0" if not args.sends_per_s > 0 else "",
    ]
    if any(problems):
        print(f"soak: {next(p for p in problems if p)}", file=sys.stderr)
        return 2
    seconds = args.minutes * 60.0
    options = Options(
        minutes=args.minutes,
        rate=args.rate,
        portfolio=args.portfolio,
        json_path=args.json,
        warmup_s=args.warmup if args.warmup is not None else min(WARMUP_S, seconds / 3),
        sample_every_s=args.sample_every,
        drain_timeout_s=args.drain_timeout,
        seed=args.seed,
        fail_on_slope=args.fail_on_slope,
        abort_on_stall_s=args.abort_on_stall,
        run_dir=args.run_dir,
        sends_per_s=args.sends_per_s,
    )
    # A log file or a pipe gets wide lines (one per sample) rather than rich's 80 columns.
    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=160)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray on loopback only, before it starts
    try:
        report = run(options, console)
    except TierflowError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the traffic started (afterwards Ctrl-C ends the traffic instead)
        print("soak: interrupted while starting; everything started was stopped", file=sys.stderr)
        return 130
    processes, overall = summary_tables(report)
    console.print(processes)
    console.print(overall)
    if options.json_path:
        Path(options.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(options.json_path).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {options.json_path}")
    if report["interrupted"]:
        print("soak: interrupted; the report covers the traffic sent until then", file=sys.stderr)
        return 130
    if report["problems"]:
        print(f"soak: FAILED: {'; '.join(report['problems'])}", file=sys.stderr)
        return 1
    if options.fail_on_slope and not report["goal"]["stage_rss_slopes"]:
        goal = report["goal"]
        print(
            f"soak: stage memory grows: {goal['worst_stage']} at {goal['worst_stage_slope_mb_per_h']} MB/h "
            f"(goal < {SLOPE_GOAL_MB_PER_H:g})",
            file=sys.stderr,
        )
        return 1
    return 0


def run(options: Options, console: Console) -> dict[str, Any]:
    """Broker, Ray, the soak; everything started here is stopped here, on success, error or Ctrl-C."""
    from infra.ray_cluster import start_ray, stop_ray

    config = load_config_or_portfolio(options.portfolio)
    keep = bool(options.run_dir)
    run_dir = Path(options.run_dir) if keep else Path(tempfile.mkdtemp(prefix="tierflow-soak-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    config = replace(
        config, namespace=f"soak-{uuid.uuid4().hex[:8]}", results_path=str(run_dir.resolve() / "results.jsonl")
    )
    requests = options.rate * options.minutes * 60
    broker_mb = requests / 1e6 * BROKER_MB_PER_MILLION
    available = psutil.virtual_memory().available / (1 << 20)
    console.print(
        f"[bold]soak[/]: portfolio {options.portfolio}, {options.rate:g} req/s for {options.minutes:g} min "
        f"(~{requests:,.0f} requests); run dir {run_dir}"
    )
    if broker_mb > 0.8 * available:
        console.print(
            f"[yellow]the embedded broker keeps every record: expect up to ~{broker_mb:,.0f} MB, "
            f"{available:,.0f} MB available[/]"
        )
    broker = EmbeddedBroker(log_dir=run_dir)
    ray_started = False
    ok = False
    try:
        bootstrap = broker.start()
        console.print(f"embedded broker on {bootstrap} (pid {broker.pid}); {os.cpu_count()} cores")
        with console.status("starting Ray on 127.0.0.1…"):
            ray_started = start_ray(config.ray)
        try:
            report = asyncio.run(soak(config, broker, options, console))
        except (KafkaError, ConnectionError) as exc:
            raise SoakError(f"lost the broker: {exc}") from exc
        ok = bool(report["ok"])
    finally:
        stop_ray(ray_started)
        broker.stop()  # by its pid, never by name
        if ok and not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif not keep:
            console.print(f"run dir kept for the broker log and results file: {run_dir}")
    report["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    report["portfolio"] = options.portfolio
    report["namespace"] = config.namespace
    report["machine"] = {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mb": round(psutil.virtual_memory().total / (1 << 20)),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    return report


if __name__ == "__main__":
    sys.exit(main())
