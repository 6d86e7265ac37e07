"""Does a tier grow with a load step, drain its backlog, and shrink again, losing nothing?

A simulated three-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two workers,
4 CPUs each, all on this machine), one embedded broker, and the namespace's supervisor
(``infra/supervisor.py``) deployed on it, as ``tierflow up --detach`` does. The one tier
serves each request with a ``--service-ms`` sleep, one request per model call, so a
replica serves ``1000 / service_ms`` requests/s whatever the CPU does, and replicas add
capacity even on 2 cores. Its pool is autoscaled on queue time (``target_queue_s``).

(a) **Load step.** ``--base-rate`` requests/s (0.8 of one replica by default) for
``--settle`` s, then ``--factor`` times that for ``--step`` s, then the base rate again for
``--after`` s. Sampled every second from the supervisor: desired, running and ready replicas,
lag, and the lag target (``target_queue_s`` x ready replicas x the measured service rate);
from the results: p95 end-to-end latency per 5 s. ``recovery_s`` is the time from the step
until the lag is back under its target (and stays there for 5 s); ``recovery_after_ready_s``
the same from the moment the last replica the step asked for was ready (goal <= 30 s).
``lost`` counts requests without a result after the drain, ``delivered_duplicates`` the
ids the results sink wrote twice.

(b) **Scaling efficiency.** The same tier at fixed 1, 2 and 4 replicas (no autoscaling), fed a
backlog of ``--efficiency-s`` seconds of what n replicas serve: throughput(n) is the rate of
results over the middle 80 % of them, and ``efficiency[n] = throughput(n) / (n x
throughput(1))`` (goal >= 0.8 at 4).

Usage::

    .venv/bin/python load_tests/autoscale.py --json load_tests/results/autoscale.json \\
        --plot load_tests/results/autoscale.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray.cluster_utils import Cluster
from rich.console import Console

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import Config, RayConfig, parse_config
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray
from infra.supervisor import await_ready, start_supervisor, stop_supervisor
from policies.window import percentile
from topics import Request
from topics.admin import delete_topics
from topics.control import ControllerKey

POOL = "worker.t"
SIGNING_ENV = "TIERFLOW_AUTOSCALE_BENCH_SIGNER"
BUCKET_S = 5.0
STAYS_S = 5
"""Seconds the lag must stay under its target to count as recovered."""


def bench_config(workdir: Path, service_ms: float, autoscale: dict[str, Any] | None, replicas: int = 1) -> Config:
    """One tier that answers everything (threshold 0) after ``service_ms`` of sleep per request."""
    tier: dict[str, Any] = {
        "name": "t",
        "backend": "simulated",
        "threshold": 0.0,
        "replicas": replicas,
        "partitions": 8,
        "batch_size": 1,
        "num_cpus": 0.1,
        "options": {"accuracy": 0.9, "latency_ms": service_ms},
    }
    if autoscale:
        tier["autoscale"] = autoscale
    key = ControllerKey.generate("bench")
    os.environ[SIGNING_ENV] = key.seed.hex()
    namespace = f"as-{uuid.uuid4().hex[:8]}"
    return parse_config(
        {
            "namespace": namespace,
            "results_path": str(workdir / f"{namespace}.jsonl"),
            "broker": {"session_timeout_ms": 2000, "fetch_max_wait_ms": 10},
            "router": {"partitions": 8},
            "verifier": {"partitions": 8},
            "sink": {"partitions": 8},
            "control": {"signing_key_env": SIGNING_ENV, "public_keys": {key.key_id: key.public_key.hex()}},
            "tiers": [tier],
        }
    )


def delivered(config: Config) -> Counter[str]:
    path = Path(config.results_path)
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(json.loads(line)["id"] for line in lines)


async def paced(producer: RequestProducer, prefix: str, rate: float, seconds: float, sent: list[str]) -> None:
    """Send ``rate`` requests/s for ``seconds``, in 50 ms ticks."""
    start, done = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(rate * elapsed) - done
        if due > 0:
            batch = [Request(f"{prefix}-{done + i}", "q", time.time()) for i in range(due)]
            await producer.send_many(batch)
            sent += [r.id for r in batch]
            done += due
        await asyncio.sleep(0.05)


async def collect(collector: ResultCollector, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await collector.poll()


async def sample(handle: Any, t0: float, timeline: list[dict[str, Any]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        described = await handle.describe.remote()
        pool = described.get("pools", {}).get(POOL)
        if pool:
            timeline.append({"t": round(time.monotonic() - t0, 2), **{k: pool[k] for k in _SAMPLED}})
        await asyncio.sleep(1.0)


_SAMPLED = ("desired", "running", "ready", "lag", "arrival_rate", "service_rate", "reason")


def recovery(timeline: list[dict[str, Any]], step_at: float, target_queue_s: float) -> dict[str, Any]:
    """When the lag was back under target (``target_queue_s`` x ready x service rate) after the step."""
    after = [s for s in timeline if s["t"] >= step_at]
    for s in after:
        s["lag_target"] = round(target_queue_s * max(1, s["ready"]) * s["service_rate"], 1)
    peak = max((s["desired"] for s in after), default=0)
    ready_at = next((s["t"] for s in after if s["ready"] >= peak), None)
    back = None
    for i, s in enumerate(after):
        if s["t"] - step_at < 2:
            continue  # the step must have been seen first
        window = after[i : i + STAYS_S]
        if len(window) == STAYS_S and all(w["lag"] <= w["lag_target"] for w in window):
            back = s["t"]
            break
    return {
        "peak_lag": max((s["lag"] for s in after), default=0),
        "replicas_max": peak,
        "ready_s": None if ready_at is None else round(ready_at - step_at, 1),
        "recovery_s": None if back is None else round(back - step_at, 1),
        "recovery_after_ready_s": None if back is None or ready_at is None else round(max(0.0, back - ready_at), 1),
    }


def p95_buckets(collector: ResultCollector, t0_wall: float) -> list[tuple[float, float]]:
    buckets: dict[int, list[float]] = {}
    for result in collector.collected.results.values():
        buckets.setdefault(int((result.completed_at - t0_wall) // BUCKET_S), []).append(result.latency_ms)
    return [((b + 0.5) * BUCKET_S, percentile(v, 95)) for b, v in sorted(buckets.items()) if b >= 0]


async def load_step(bootstrap: str, workdir: Path, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    autoscale = {"min_replicas": 1, "max_replicas": 8, "target_queue_s": args.target_queue_s}  # default delays
    config = bench_config(workdir, args.service_ms, autoscale)
    kafka = kafka_options(config.broker, bootstrap)
    handle, _ = start_supervisor(config, bootstrap)
    sent: list[str] = []
    timeline: list[dict[str, Any]] = []
    producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
    try:
        await asyncio.to_thread(await_ready, handle, 120.0)
        await producer.start()
        await collector.start()
        stop_collecting, stop_sampling = asyncio.Event(), asyncio.Event()
        t0, t0_wall = time.monotonic(), time.time()
        collecting = asyncio.create_task(collect(collector, stop_collecting))
        sampling = asyncio.create_task(sample(handle, t0, timeline, stop_sampling))
        phases = (
            ("settle", args.base_rate, args.settle),
            ("step", args.base_rate * args.factor, args.step),
            ("after", args.base_rate, args.after),
        )
        marks = {}
        for name, rate, seconds in phases:
            marks[name] = round(time.monotonic() - t0, 2)
            console.print(f"[bold]{name}[/]: {rate:g} requests/s for {seconds:g} s")
            await paced(producer, name, rate, seconds, sent)
        stop_collecting.set()
        await collecting
        lost = len(await collector.wait_for(set(sent), args.drain))
        stop_sampling.set()
        await sampling
        counts = delivered(config)
        report = {
            "service_ms": args.service_ms,
            "base_rate": args.base_rate,
            "step_rate": args.base_rate * args.factor,
            "target_queue_s": args.target_queue_s,
            "phases_at_s": marks,
            **recovery(timeline, marks["step"], args.target_queue_s),
            "replicas_at_end": timeline[-1]["desired"] if timeline else None,
            "sent": len(sent),
            "lost": lost,
            "delivered_duplicates": sum(n - 1 for n in counts.values() if n > 1),
            "raw_duplicates": collector.collected.raw_duplicates,
            "timeline": timeline,
            "p95_ms": [(round(t, 1), round(v, 1)) for t, v in p95_buckets(collector, t0_wall)],
        }
    finally:
        await producer.stop()
        await collector.stop()
        await asyncio.to_thread(stop_supervisor, handle)
        await delete_topics(kafka, config.layout.all_topics())
    return report


async def throughput_at(bootstrap: str, workdir: Path, replicas: int, args: argparse.Namespace) -> float:
    """Results per second of the tier at a fixed ``replicas`` over a backlog, its middle 80 %."""
    config = bench_config(workdir, args.service_ms, None, replicas=replicas)
    kafka = kafka_options(config.broker, bootstrap)
    pipeline = Pipeline(config, bootstrap)
    producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
    try:
        await pipeline.start(ready_timeout_s=120)
        await producer.start()
        await collector.start()
        count = int(replicas * 1000 / args.service_ms * args.efficiency_s)
        requests = [Request(f"e{replicas}-{i}", "q", time.time()) for i in range(count)]
        await producer.send_many(requests)
        missing = await collector.wait_for({r.id for r in requests}, args.efficiency_s * 4 + 60)
        if missing:
            raise RuntimeError(f"{len(missing)} of {count} requests got no result at {replicas} replicas")
        done = sorted(r.completed_at for r in collector.collected.results.values())
        low, high = done[len(done) // 10], done[len(done) * 9 // 10]
        return (len(done) * 8 // 10) / (high - low)
    finally:
        await producer.stop()
        await collector.stop()
        await pipeline.stop()
        await delete_topics(kafka, config.layout.all_topics())


def plot(path: str, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line = report["timeline"]
    t = [s["t"] for s in line]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    top.step(t, [s["desired"] for s in line], where="post", label="desired")
    top.step(t, [s["ready"] for s in line], where="post", label="ready")
    top.set_ylabel("replicas")
    rate = top.twinx()
    rate.plot(t, [s["arrival_rate"] for s in line], color="grey", alpha=0.5, label="arriving /s")
    rate.set_ylabel("requests/s arriving")
    top.legend(loc="upper left", fontsize=8)
    middle.plot(t, [s["lag"] for s in line], label="lag")
    middle.plot(t, [s.get("lag_target", float("nan")) for s in line], "k--", label="lag target")
    middle.set_ylabel("records")
    middle.legend(loc="upper right", fontsize=8)
    bottom.plot([p[0] for p in report["p95_ms"]], [p[1] for p in report["p95_ms"]], label="p95 end to end")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right", fontsize=8)
    for axis in (top, middle, bottom):
        for name, at in report["phases_at_s"].items():
            axis.axvline(at, color="red" if name == "step" else "grey", linewidth=0.8, linestyle=":")
    rates = f"{report['base_rate']:g} -> {report['step_rate']:g} -> {report['base_rate']:g}"
    top.set_title(f"autoscaling: {rates} requests/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tierflow-autoscale-"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "node_ip_address": "127.0.0.1"})
    for _ in range(2):
        cluster.add_node(num_cpus=4, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    try:
        start_ray(RayConfig(address=cluster.address))
        with EmbeddedBroker(log_dir=str(workdir)) as bootstrap:
            step = await load_step(bootstrap, workdir, args, console)
            console.print(
                f"step: peak lag {step['peak_lag']}, replicas max {step['replicas_max']}, "
                f"recovery {step['recovery_s']} s ({step['recovery_after_ready_s']} s after ready), "
                f"lost {step['lost']}, duplicates {step['delivered_duplicates']}"
            )
            rates = {}
            for n in (1, 2, 4):
                rates[n] = await throughput_at(bootstrap, workdir, n, args)
                console.print(f"throughput at {n} replica(s): {rates[n]:.1f} requests/s")
    finally:
        ray.shutdown()
        cluster.shutdown()
    efficiency = {str(n): round(rate / (n * rates[1]), 3) for n, rate in rates.items()}
    return {
        **step,
        "throughput": {str(n): round(rate, 1) for n, rate in rates.items()},
        "efficiency": efficiency,
        "nodes": 3,
        "cpus": os.cpu_count(),
        "goals": {
            "recovery_after_ready_s<=30": (step["recovery_after_ready_s"] or 1e9) <= 30,
            "efficiency[4]>=0.8": efficiency["4"] >= 0.8,
            "lost==0": step["lost"] == 0,
            "delivered_duplicates==0": step["delivered_duplicates"] == 0,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="", metavar="PATH", help="write the report here")
    parser.add_argument("--plot", default="", metavar="PATH", help="replicas, lag and p95 over time (PNG)")
    parser.add_argument("--service-ms", type=float, default=40.0, help="sleep per request at the tier (40 ms)")
    parser.add_argument("--base-rate", type=float, default=20.0, help="requests/s before and after the step (20)")
    parser.add_argument("--factor", type=float, default=4.0, help="the step multiplies the rate by this (4)")
    parser.add_argument("--settle", type=float, default=40.0, metavar="S", help="seconds before the step (40)")
    parser.add_argument("--step", type=float, default=120.0, metavar="S", help="seconds of the step (120)")
    parser.add_argument("--after", type=float, default=60.0, metavar="S", help="seconds after the step (60)")
    parser.add_argument("--drain", type=float, default=60.0, metavar="S", help="at most this long for stragglers")
    parser.add_argument("--target-queue-s", type=float, default=1.0, help="the pool's queue-time target (1 s)")
    parser.add_argument("--efficiency-s", type=float, default=20.0, metavar="S", help="backlog per run, seconds (20)")
    args = parser.parse_args()
    console = Console(stderr=True)
    with contextlib.suppress(KeyboardInterrupt):
        report = asyncio.run(main_async(args, console))
        text = json.dumps(report, indent=2)
        if args.json:
            Path(args.json).write_text(text + "\n")
        if args.plot:
            plot(args.plot, report)
        summary = {k: v for k, v in report.items() if k not in ("timeline", "p95_ms")}
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
