"""Chaos run: steady traffic while a seeded random schedule of faults hits the pipeline.

Faults, one every ``--interval`` seconds: SIGKILL a random stage replica (Ray
restarts it), SIGTERM one (graceful stop; the pipeline starts a replacement), add or remove a
replica of a random pool (rebalance mid-stream), SIGSTOP the embedded broker for a
few seconds, or a burst of poison records (not msgpack, wrong types, missing
fields, oversized, NaN) on the requests topic. Afterwards the history checker
(``tests/history.py``) waits for the pipeline to drain and checks every request is
accounted for exactly once and every poison record dead-lettered with its reason.
The seed is printed first and saved, so a failing schedule replays exactly.

The JSON has ``requests``, ``delivered``, ``lost``, ``delivered_duplicates``,
``raw_duplicates``, ``dead_letters`` by reason, ``faults`` by kind (and each one,
timed), the peak RSS of each pool's processes and of the broker, and throughput
(results per second) before the first fault, while faults run, and while draining.

Usage::

    .venv/bin/python load_tests/chaos.py --minutes 10 --rate 200 --seed 7 --json chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the history checker lives in tests/

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer
from infra.config import Config, RayConfig, parse_config
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray, stop_ray
from tests.history import check_history
from topics.messages import Request

FAULTS = ("kill", "term", "scale", "pause_broker", "poison")
POISON_EACH = 10
"""Records of each poison kind per burst."""


def poison_records(burst: int) -> dict[str, tuple[bytes, str]]:
    """Key -> (value, the reason its dead letter must give), one burst of every kind."""
    records: dict[str, tuple[bytes, str]] = {}
    for i in range(POISON_EACH):
        tag = f"poison-{burst}-{i}"
        records |= {
            f"{tag}-bytes": (b"\xc1 not msgpack", "not_msgpack"),
            f"{tag}-type": (msgpack.packb({"k": "request@1", "id": 5, "in": "x", "ca": 1.0}), "wrong_type"),
            f"{tag}-missing": (msgpack.packb({"k": "request@1", "in": "x"}), "missing_field"),
            f"{tag}-large": (Request(id=f"{tag}-large", input="x" * 100_000, created_at=1.0).to_wire(), "too_large"),
            f"{tag}-nan": (msgpack.packb({"k": "request@1", "id": f"{tag}-nan", "in": "x", "ca": float("nan")}),
                           "out_of_range"),
        }  # fmt: skip
    return records


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def throughput(times: list[float], start: float, end: float) -> float | None:
    """Results per second completed in [start, end)."""
    if end <= start:
        return None
    return round(sum(start <= t < end for t in times) / (end - start), 1)


def chaos_config(run_dir: Path) -> Config:
    tier = {"backend": "simulated", "num_cpus": 0.1, "partitions": 4, "batch_size": 16, "threshold": 0.8}
    return parse_config(
        {
            "namespace": f"chaos-{uuid.uuid4().hex[:8]}",
            "results_path": str(run_dir / "results.jsonl"),
            "broker": {"session_timeout_ms": 2000},
            "limits": {"max_batch": 32, "max_payload_bytes": 65536},
            "router": {"partitions": 4},
            "verifier": {"partitions": 4},
            "sink": {"partitions": 4},
            "tiers": [
                tier | {"name": "small", "cost": 0.001, "options": {"accuracy": 0.7, "latency_ms": 5.0, "seed": 1}},
                tier | {"name": "large", "cost": 0.01, "options": {"accuracy": 0.9, "latency_ms": 10.0, "seed": 2}},
            ],
        }
    )


async def inject(
    kind: str, pipeline: Pipeline, broker: EmbeddedBroker, rng: random.Random, poison: dict[str, str],
    producer: RequestProducer,
) -> str:  # fmt: skip
    """Apply one fault; return what was done, for the log (poison keys and reasons go into ``poison``)."""
    if kind == "poison":
        burst = poison_records(len(poison))
        for key, (value, reason) in burst.items():
            await producer.send_raw(value, key=key.encode())
            poison[key] = reason
        return f"{len(burst)} poison records"
    pool_name = rng.choice(sorted(pipeline.pools))
    pool = pipeline.pools[pool_name]
    if kind == "pause_broker":
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        await asyncio.sleep(3)
        os.kill(broker.pid, signal.SIGCONT)
        return "broker paused 3s"
    if kind == "scale":
        target = 2 if len(pool.actors) == 1 else 1
        await pipeline.scale(pool_name, target)
        return f"{pool_name} scaled to {target}"
    live = [s for s in await pipeline.pool_stats(pool) if "pid" in s]
    if not live:
        return f"{pool_name}: no live replica to signal"
    victim = rng.choice(live)
    os.kill(victim["pid"], signal.SIGKILL if kind == "kill" else signal.SIGTERM)  # SIGTERM: the pipeline replaces it
    return f"{kind} {pool_name}[{victim['replica']}] pid {victim['pid']}"


async def run(seconds: float, rate: float, interval: float, seed: int, console: Console) -> dict[str, Any]:
    rng = random.Random(seed)
    run_dir = Path(tempfile.mkdtemp(prefix="tierflow-chaos-"))
    config = chaos_config(run_dir)
    broker = EmbeddedBroker(log_dir=run_dir)
    ray_started = False
    try:
        bootstrap = broker.start()
        ray_started = start_ray(RayConfig(num_cpus=16))
        kafka = kafka_options(config.broker, bootstrap)
        pipeline = Pipeline(config, bootstrap)
        await pipeline.start()
        producer = RequestProducer(kafka, config.layout)
        await producer.start()
        sent: list[str] = []
        faults: list[dict[str, Any]] = []
        poison: dict[str, str] = {}
        peak_rss: dict[str, float] = {}
        started = time.monotonic()
        wall_started = time.time()
        next_fault = started + interval

        async def watch_memory() -> None:
            while True:
                processes = {"broker": broker.pid or 0, "driver": os.getpid()}
                for name, pool in pipeline.pools.items():
                    for stats in await pipeline.pool_stats(pool):
                        if "pid" in stats:
                            processes[f"{name}[{stats['replica']}]"] = stats["pid"]
                for name, pid in processes.items():
                    pool_name = name.split("[")[0]
                    peak_rss[pool_name] = round(max(peak_rss.get(pool_name, 0.0), rss_mb(pid)), 1)
                await asyncio.sleep(1.0)

        watcher = asyncio.create_task(watch_memory())

        async def traffic() -> None:
            tick = 0.1
            while time.monotonic() - started < seconds:
                now = time.time()
                batch = [Request(f"c{len(sent) + i}", "q", now) for i in range(max(1, int(rate * tick)))]
                await producer.send_many(batch)
                sent.extend(r.id for r in batch)
                await asyncio.sleep(tick)

        sender = asyncio.create_task(traffic())
        while not sender.done():
            await asyncio.sleep(0.2)
            if time.monotonic() >= next_fault:
                kind = rng.choice(FAULTS)
                what = await inject(kind, pipeline, broker, rng, poison, producer)
                faults.append({"at_s": round(time.monotonic() - started, 1), "fault": kind, "what": what})
                console.print(f"  {faults[-1]['at_s']:6.1f}s  {what}")
                next_fault = time.monotonic() + interval
        await sender
        traffic_ended = time.time()
        await producer.stop()
        report = await check_history(kafka, config, sent, unknown=list(poison), seed=seed, timeout_s=180)
        watcher.cancel()
        await pipeline.stop()
    finally:
        stop_ray(ray_started)
        broker.stop()
    wrong_reason = sorted(k for k, reason in poison.items() if report.dead_letter_ids.get(k) != reason)
    problems = report.problems()
    if wrong_reason:
        problems.append(f"{len(wrong_reason)} poison records without their dead letter, e.g. {wrong_reason[:3]}")
    first_fault = wall_started + faults[0]["at_s"] if faults else traffic_ended
    last_result = report.completed_at[-1] if report.completed_at else traffic_ended
    return {
        "seed": seed,
        "seconds": seconds,
        "rate": rate,
        "requests": len(sent),
        "delivered": report.results,
        "lost": len(report.missing),
        "phantom": len(report.phantom),
        "raw_duplicates": report.raw_duplicates,
        "delivered_duplicates": report.delivered_duplicates,
        "undelivered": len(report.undelivered),
        "bad_escalations": len(report.bad_escalations),
        "dead_letters": dict(report.dead_letter_reasons),
        "poison_sent": len(poison),
        "poison_without_their_dead_letter": len(wrong_reason),
        "faults_by_kind": dict(Counter(f["fault"] for f in faults)),
        "faults": faults,
        "peak_rss_mb": peak_rss,
        "throughput_rps": {
            "before_faults": throughput(report.completed_at, wall_started, first_fault),
            "during_faults": throughput(report.completed_at, first_fault, traffic_ended),
            "draining": throughput(report.completed_at, traffic_ended, last_result),
        },
        "ok": not problems,
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long traffic and faults run")
    parser.add_argument("--minutes", type=float, default=None, help="the same, in minutes (overrides --seconds)")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--interval", type=float, default=6.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=None, help="fault schedule seed (default: random, printed)")
    parser.add_argument("--json", default="", help="write the outcome here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    console = Console()
    console.print(f"chaos: seed {seed}, {seconds:.0f}s at {args.rate:.0f} req/s, a fault every {args.interval}s")
    outcome = asyncio.run(run(seconds, args.rate, args.interval, seed, console))
    verdict = "[green]every request accounted for exactly once[/]" if outcome["ok"] else "[red]FAILED[/]"
    console.print(
        f"sent {outcome['requests']}, delivered {outcome['delivered']}, lost {outcome['lost']}, "
        f"dead letters {outcome['dead_letters']}, raw duplicates {outcome['raw_duplicates']}, "
        f"delivered duplicates {outcome['delivered_duplicates']}: {verdict}"
    )
    console.print(f"throughput (results/s): {outcome['throughput_rps']}; peak RSS (MB): {outcome['peak_rss_mb']}")
    for problem in outcome["problems"]:
        console.print(f"  [red]{problem}[/] (replay: --seed {seed})")
    if args.json:
        Path(args.json).write_text(json.dumps(outcome, indent=2) + "\n")
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
