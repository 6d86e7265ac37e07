"""``tierflow send``: produce requests from JSONL and, with ``--wait``, print their results as JSONL.

With ``--wait`` the requests a broker lost (it restarted without its data) are sent again, so every
request sent gets a result or is counted as missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from infra.cli.common import Subparsers, bootstrap_servers, note
from infra.config import Config, load_config


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "send",
        help="produce requests from JSONL and optionally wait for their results",
        description='Each input line is {"input": "...", "id": optional, "deadline_s": optional, '
        '"allowed_tiers": optional list, "tenant": optional}.',
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="TOML config (namespace, broker security; required)"
    )
    parser.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    parser.add_argument("--file", default="-", metavar="F", help="JSONL input (default: stdin)")
    parser.add_argument(
        "--wait", action="store_true", help="print each request's result as JSONL (default: don't wait)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S", help="how long --wait waits (default 120)")


def run(args: argparse.Namespace) -> int:
    """Read every line before sending any, so a bad line sends nothing; 1 when --wait missed results."""
    from topics.errors import DataError

    config = load_config(args.config)
    bootstrap = bootstrap_servers(config, args.bootstrap)
    if args.file == "-":
        requests = read_requests(sys.stdin, "stdin")
    else:
        try:
            with Path(args.file).open(encoding="utf-8") as handle:
                requests = read_requests(handle, args.file)
        except OSError as exc:
            raise DataError(f"cannot read {args.file}: {exc.strerror}") from exc
    return asyncio.run(_send(config, bootstrap, requests, args.wait, args.timeout))


def read_requests(source: TextIO, name: str) -> list[Any]:
    """Requests from JSONL lines (blank lines skipped); a bad line is a DataError naming ``name:line``."""
    from topics.errors import DataError
    from topics.messages import Hints, Request

    now = time.time()
    requests = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("input"), str):
                raise ValueError('each line must be an object with a string "input"')
            deadline = item.get("deadline_s")
            tiers = item.get("allowed_tiers")
            requests.append(
                Request(
                    id=str(item.get("id") or uuid.uuid4().hex),
                    input=item["input"],
                    created_at=now,
                    deadline=now + float(deadline) if deadline is not None else None,
                    hints=Hints(allowed_tiers=tuple(tiers) if tiers is not None else None),
                    tenant=str(item.get("tenant", "")),
                )
            )
        except (ValueError, TypeError) as exc:
            raise DataError(f"{name}:{number}: {exc}") from exc
    return requests


async def _send(config: Config, bootstrap: str, requests: list[Any], wait: bool, timeout_s: float) -> int:
    from infra.broker import kafka_options
    from infra.client import RequestProducer

    kafka = kafka_options(config.broker, bootstrap)
    producer = RequestProducer(kafka, config.layout)
    await producer.start()
    try:
        await producer.send_many(requests)
        note(f"sent {len(requests)} requests")
        if not wait:
            return 0
        return await _wait_and_print(config, kafka, producer, requests, timeout_s)
    finally:
        await producer.stop()


async def _wait_and_print(
    config: Config, kafka: dict[str, Any], producer: Any, requests: list[Any], timeout_s: float
) -> int:
    """Print each request's result as JSONL; resubmit what a broker that lost its data dropped."""
    from infra.client import ResultCollector
    from topics.admin import ensure_topics
    from workers.results_sink import result_to_json

    async def resend(lost: list[Any]) -> None:
        """The broker lost its data: rebuild the topics (whoever is first), then send the unanswered again."""
        await ensure_topics(kafka, config.partitions(), config.broker.replication_factor)
        await producer.send_many(lost)

    collector = ResultCollector(kafka, config.layout)
    await collector.start()
    try:
        missing = await collector.wait_for(
            {r.id for r in requests},
            timeout_s,
            resubmit=lambda ids: resend([r for r in requests if r.id in ids]),
        )
    finally:
        await collector.stop()
    for request in requests:
        result = collector.collected.results.get(request.id)
        if result is not None:
            print(json.dumps(result_to_json(result)))
    if missing:
        note(f"{len(missing)} requests have no result after {timeout_s:.0f}s")
        return 1
    return 0
