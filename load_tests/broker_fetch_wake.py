"""When does the embedded broker answer a fetch that is waiting for data (Kafka's long poll)?

A record already there when a fetch arrives is returned at once. A record that arrives
while the fetch waits is not returned at once either, nor only at the end of the wait:
measured on the 2-core machine, Tansu looks again at half the wait, then at half of what
is left, and so on (a 1,000 ms wait: a record written 50-400 ms in came back at ~500 ms,
one written at 700 ms at ~750 ms, at 900 ms at ~940 ms). So a fetch wait of W costs a
hop up to W/2 of latency on the first record after a quiet spell, which is what
``topics/pacing.py``'s idle wait trades against the broker's fetches per second.

    .venv/bin/python load_tests/broker_fetch_wake.py --json load_tests/results/broker_fetch_wake.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from infra.broker import EmbeddedBroker
from topics.admin import ensure_topics

WAITS_MS = (200, 1000)
ARRIVALS = (0.05, 0.1, 0.2, 0.4, 0.7, 0.9)
"""When the record is written, as a share of the fetch wait after the fetch went out."""
REPEATS = 4


async def measure(bootstrap: str, console: Console) -> list[dict[str, Any]]:
    topic = f"wake-{uuid.uuid4().hex[:8]}"
    await ensure_topics({"bootstrap_servers": bootstrap}, {topic: 1})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    rows: list[dict[str, Any]] = []
    try:
        for wait_ms in WAITS_MS:
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=f"wake-{uuid.uuid4().hex[:8]}",
                fetch_max_wait_ms=wait_ms,
                auto_offset_reset="latest",
                enable_auto_commit=False,
            )
            await consumer.start()
            try:
                await consumer.getmany(timeout_ms=1500)  # joined and positioned
                for share in ARRIVALS:
                    delays = []
                    for _ in range(REPEATS):
                        await consumer.getmany(timeout_ms=1)  # the background fetch is out from about now
                        await asyncio.sleep(wait_ms / 1000 * share)
                        sent = time.monotonic()
                        await producer.send_and_wait(topic, b"x")
                        got: dict[Any, Any] = {}
                        while not got:
                            got = await consumer.getmany(timeout_ms=wait_ms + 3000)
                        delays.append(round((time.monotonic() - sent) * 1000, 1))
                    rows.append({"wait_ms": wait_ms, "arrival_share": share, "delivery_ms": delays})
                    console.print(f"wait {wait_ms} ms, written at {share:.0%} of it: delivered after {delays} ms")
            finally:
                await consumer.stop()
    finally:
        await producer.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the measurements as JSON here")
    args = parser.parse_args(argv)
    console = Console()
    with EmbeddedBroker() as bootstrap:
        rows = asyncio.run(measure(bootstrap, console))
    table = Table(title="Embedded broker: delivery of a record written while a fetch waits")
    for column in ("fetch wait", "written at", "median delivery"):
        table.add_column(column, justify="right")
    for row in rows:
        median = sorted(row["delivery_ms"])[len(row["delivery_ms"]) // 2]
        table.add_row(f"{row['wait_ms']} ms", f"{row['arrival_share']:.0%}", f"{median:.0f} ms")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        console.print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
