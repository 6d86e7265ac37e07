"""How the embedded broker's fetch time grows with the batches one partition holds.

Tansu's memory engine finds a fetch's starting offset by walking the partition's batches,
so a fetch gets slower as batches pile up: a long soak at 300 requests/s sent in 50
acknowledged sends a second stalled its router after ~7 minutes (~20,000 batches on a
requests partition) with no error anywhere. This measures it directly: one-record
batches into one partition, and after every step the time a fresh consumer needs to
fetch from the start, the middle and the end.

    .venv/bin/python load_tests/broker_batches.py --json load_tests/results/broker_batches.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table

from infra.broker import EmbeddedBroker
from topics.admin import ensure_topics

TOPIC = "batches"
FETCH_TIMEOUT_S = 20.0
"""A fetch slower than this counts as stalled (aiokafka's request timeout is 40 s)."""


async def fetch_seconds(bootstrap: str, offset: int) -> float | None:
    """Seconds a fresh consumer takes to get a record at ``offset``; None past ``FETCH_TIMEOUT_S``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        started = time.perf_counter()
        got = await consumer.getmany(tp, timeout_ms=int(FETCH_TIMEOUT_S * 1000), max_records=1)
        return round(time.perf_counter() - started, 3) if got.get(tp) else None
    finally:
        await consumer.stop()


async def measure(bootstrap: str, steps: list[int], console: Console) -> list[dict[str, Any]]:
    await ensure_topics({"bootstrap_servers": bootstrap}, {TOPIC: 1})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    rows: list[dict[str, Any]] = []
    try:
        batches = 0
        for target in steps:
            while batches < target:
                acks = []
                for _ in range(min(100, target - batches)):
                    batch = producer.create_batch()
                    batch.append(key=b"k", value=b"v" * 200, timestamp=None)
                    acks.append(await producer.send_batch(batch, TOPIC, partition=0))
                    batches += 1
                await asyncio.gather(*acks)
            row: dict[str, Any] = {"batches": batches}
            for name, offset in (("first_s", 0), ("middle_s", batches // 2), ("last_s", batches - 1)):
                row[name] = await fetch_seconds(bootstrap, offset)
            rows.append(row)
            console.print(f"{batches:>7,} batches: fetch from the start {row['first_s']} s, end {row['last_s']} s")
            if row["first_s"] is None:
                break  # stalled: more batches only take longer
    finally:
        await producer.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", default="5000,10000,15000,20000,25000,30000", help="batch counts to measure at (comma-separated)"
    )
    parser.add_argument("--json", default="load_tests/results/broker_batches.json", help="write the results here")
    args = parser.parse_args()
    try:
        steps = sorted(int(step) for step in args.steps.split(","))
    except ValueError:
        print(f"broker_batches: --steps must be whole numbers, got {args.steps!r}", file=sys.stderr)
        return 2
    console = Console()
    broker = EmbeddedBroker()
    try:
        rows = asyncio.run(measure(broker.start(), steps, console))
    finally:
        broker.stop()
    table = Table(title="embedded broker: fetch time by batches in one partition")
    for column in ("batches", "from start (s)", "from middle (s)", "from end (s)"):
        table.add_column(column, justify="right")
    for row in rows:
        cells = [row["first_s"], row["middle_s"], row["last_s"]]
        table.add_row(f"{row['batches']:,}", *("stalled" if c is None else f"{c:.2f}" for c in cells))
    console.print(table)
    out = {"fetch_timeout_s": FETCH_TIMEOUT_S, "record_bytes": 200, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
