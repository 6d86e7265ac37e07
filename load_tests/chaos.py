"""Chaos run: steady traffic while a seeded random schedule of faults hits the pipeline.

Faults, one every ``--interval`` seconds: SIGKILL a random stage replica (Ray
restarts it), SIGTERM one (graceful stop; a replacement joins), add or remove a
replica of a random pool (rebalance mid-stream), or SIGSTOP the embedded broker
for a few seconds. Afterwards the history checker (``tests/history.py``) waits for
the pipeline to drain and checks every request is accounted for exactly once.
The seed is printed first and saved, so a failing schedule replays exactly.

Usage::

    .venv/bin/python load_tests/chaos.py --seconds 60 --rate 300 --seed 7 --json chaos.json
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
from pathlib import Path
from typing import Any

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the history checker lives in tests/

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer
from infra.config import Config, RayConfig, parse_config
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray, stop_ray
from tests.history import check_history
from topics.messages import Request

FAULTS = ("kill", "term", "scale", "pause_broker")


def chaos_config(run_dir: Path) -> Config:
    tier = {"backend": "simulated", "num_cpus": 0.1, "partitions": 4, "batch_size": 16, "threshold": 0.8}
    return parse_config(
        {
            "namespace": f"chaos-{uuid.uuid4().hex[:8]}",
            "results_path": str(run_dir / "results.jsonl"),
            "broker": {"session_timeout_ms": 2000},
            "limits": {"max_batch": 32},
            "router": {"partitions": 4},
            "verifier": {"partitions": 4},
            "sink": {"partitions": 4},
            "tiers": [
                tier | {"name": "small", "cost": 0.001, "options": {"accuracy": 0.7, "latency_ms": 5.0, "seed": 1}},
                tier | {"name": "large", "cost": 0.01, "options": {"accuracy": 0.9, "latency_ms": 10.0, "seed": 2}},
            ],
        }
    )


async def inject(kind: str, pipeline: Pipeline, broker: EmbeddedBroker, rng: random.Random) -> str:
    """Apply one fault; return what was done, for the log."""
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
    os.kill(victim["pid"], signal.SIGKILL if kind == "kill" else signal.SIGTERM)
    if kind == "term":  # a graceful stop is final: keep the pool's size
        await asyncio.sleep(1)
        await pipeline.scale(pool_name, len(pool.actors) + 1)
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
        started = time.monotonic()
        next_fault = started + interval

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
                what = await inject(kind, pipeline, broker, rng)
                faults.append({"at_s": round(time.monotonic() - started, 1), "fault": kind, "what": what})
                console.print(f"  {faults[-1]['at_s']:6.1f}s  {what}")
                next_fault = time.monotonic() + interval
        await sender
        await producer.stop()
        report = await check_history(kafka, config, sent, seed=seed, timeout_s=180)
        await pipeline.stop()
    finally:
        stop_ray(ray_started)
        broker.stop()
    return {
        "seed": seed,
        "seconds": seconds,
        "rate": rate,
        "sent": len(sent),
        "results": report.results,
        "dead_letters": report.dead_letters,
        "missing": len(report.missing),
        "phantom": len(report.phantom),
        "raw_duplicates": report.raw_duplicates,
        "delivered_duplicates": report.delivered_duplicates,
        "undelivered": len(report.undelivered),
        "bad_escalations": len(report.bad_escalations),
        "faults": faults,
        "ok": not report.problems(),
        "problems": report.problems(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long traffic and faults run")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--interval", type=float, default=6.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=None, help="fault schedule seed (default: random, printed)")
    parser.add_argument("--json", default="", help="write the outcome here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    console = Console()
    console.print(f"chaos: seed {seed}, {args.seconds:.0f}s at {args.rate:.0f} req/s, a fault every {args.interval}s")
    outcome = asyncio.run(run(args.seconds, args.rate, args.interval, seed, console))
    verdict = "[green]every request accounted for exactly once[/]" if outcome["ok"] else "[red]FAILED[/]"
    console.print(
        f"sent {outcome['sent']}, results {outcome['results']}, dead letters {outcome['dead_letters']}, "
        f"raw duplicates {outcome['raw_duplicates']}, delivered duplicates {outcome['delivered_duplicates']}: "
        f"{verdict}"
    )
    for problem in outcome["problems"]:
        console.print(f"  [red]{problem}[/] (replay: --seed {seed})")
    if args.json:
        Path(args.json).write_text(json.dumps(outcome, indent=2) + "\n")
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
