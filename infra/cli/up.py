"""``tierflow up``: run a config's pipeline until Ctrl-C or SIGTERM, printing counters as it goes."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

from infra.cli.common import Subparsers, note
from infra.config import Config, load_config, with_policy_file


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the pipeline of a config file until stopped (Ctrl-C)",
        description="Start (or join) the configured broker and Ray, deploy every stage pool, "
        "and run until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML config (required)")
    parser.add_argument(
        "--policy",
        default="",
        metavar="FILE",
        help="run a fitted policy file (tierflow fit) instead of the config's policies (default: none)",
    )
    parser.add_argument(
        "--status-every", type=float, default=10.0, metavar="S", help="print counters every S seconds (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    """Load (and so check) the config before starting anything: a config that cannot run starts no broker."""
    config = load_config(args.config)
    if args.policy:
        config = with_policy_file(config, args.policy)
    from infra.broker import make_provider
    from infra.ray_cluster import start_ray, stop_ray
    from workers.controller_actor import resolve_keys

    provider = make_provider(config.broker)
    ray_started = False
    try:
        bootstrap = provider.start()
        note(
            f"broker {bootstrap}, namespace {config.namespace}; send with: "
            f"tierflow send --config {args.config} --bootstrap {bootstrap}"
        )
        if config.control.enabled and not resolve_keys(config.control):
            names = ", ".join(config.control.keys.values())
            note(f"no control key set ({names}): budget commands will be refused")
        ray_started = start_ray(config.ray)
        asyncio.run(_serve(config, bootstrap, args.status_every))
    finally:
        stop_ray(ray_started)
        provider.stop()
    return 0


async def _serve(config: Config, bootstrap: str, status_every: float) -> None:
    from infra.pipeline import Pipeline

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    pipeline = Pipeline(config, bootstrap)
    try:
        await pipeline.start()
        note("pipeline ready; Ctrl-C stops it")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=status_every)
            except TimeoutError:
                print(status_line(await pipeline.stats()), file=sys.stderr)
    finally:
        await pipeline.stop()


def status_line(stats: dict[str, list[dict[str, Any]]]) -> str:
    """One line per interval — time, then per pool: replicas, consumed, dead letters — for a log to keep."""
    parts = []
    for pool, replicas in stats.items():
        consumed = sum(r.get("consumed", 0) for r in replicas)
        dead = sum(r.get("dead_letters", 0) for r in replicas)
        parts.append(f"{pool}: {len(replicas)}x in={consumed} dlq={dead}")
    return time.strftime("%H:%M:%S ") + " | ".join(parts)
