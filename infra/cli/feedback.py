"""``tierflow feedback``: produce labels on answered requests from JSONL to ``<ns>.feedback``.

Each line labels one request by its id, in exactly one way: ``"correct": true|false``, a
``"score"`` in [0, 1], or a ``"preferred_tier"`` the config names; with an optional
``"tier"`` (whose answer a correct or score label judges; default the delivered one),
``"source"`` (who labelled it; default ``cli``) and ``"at"`` (epoch seconds when it was
labelled; default now). Like ``tierflow send``, every line is checked before any is sent,
each bad line is one error naming the line and the field, and a bad line sends nothing
(exit 2). The built label survives the decoder its reader runs (:class:`topics.feedback.Feedback`),
so the wire's own limits are checked here without a copy of them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from infra.cli.common import EXIT_ERROR, Subparsers, bootstrap_servers, note
from infra.cli.jsonl import (
    BadLine,
    json_object,
    kind,
    numbered_lines,
    optional_number,
    optional_string,
    read_input,
    report_bad_lines,
)
from infra.config import Config, load_config

if TYPE_CHECKING:
    from topics.feedback import Feedback

FIELDS = ("id", "correct", "score", "preferred_tier", "tier", "source", "at")
"""The keys a label line may have; any other is refused (a misspelt ``scor`` would be ignored)."""
DEFAULT_SOURCE = "cli"


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "feedback",
        help="produce labels on answered requests (correct, score or preferred tier) from JSONL",
        description='Each input line is {"id": "...", and exactly one of "correct": true|false, "score": 0..1, '
        '"preferred_tier": "<tier>"; "tier": optional, the tier whose answer is judged (default: the delivered '
        'one); "source": optional, "at": optional epoch seconds}. Every line is checked '
        "before any is sent: a bad line sends nothing (exit 2). Labels may come long after the results.",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="TOML config (namespace, tiers, broker; required)"
    )
    parser.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    parser.add_argument("--file", default="-", metavar="F", help="JSONL labels (default: stdin)")


@dataclass
class Labels:
    """What the input holds: the labels of its good lines, and one message per bad line."""

    name: str
    labels: list[Feedback] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    """Check every line, then send them all; 2 when one is bad."""
    config = load_config(args.config)
    bootstrap = bootstrap_servers(config, args.bootstrap)
    given = read_input(args.file, lambda lines, name: read_labels(lines, name, config))
    if given.problems:
        report_bad_lines(given.problems, given.name)
        return EXIT_ERROR
    asyncio.run(_send(config, bootstrap, given.labels))
    note(f"sent {len(given.labels)} labels to {config.layout.feedback}")
    return 0


def read_labels(source: Iterable[bytes], name: str, config: Config, now: float | None = None) -> Labels:
    """Check every line of ``source``; problems read ``name:line: …``."""
    now = time.time() if now is None else now
    tiers = tuple(tier.name for tier in config.tiers)
    given = Labels(name)
    for number, line in numbered_lines(source):
        try:
            given.labels.append(check_label(line, tiers, config.limits.max_payload_bytes, now))
        except BadLine as exc:
            given.problems.append(f"{name}:{number}: {exc}")
    return given


def check_label(line: bytes, tiers: tuple[str, ...], max_payload_bytes: int, now: float) -> Feedback:
    """The label one line asks for, or :class:`BadLine` naming the first field that is wrong."""
    from topics.feedback import LABEL_FIELDS, Feedback

    item = json_object(line, 'a JSON object with an "id" and one of "correct", "score", "preferred_tier"')
    unknown = [key for key in item if key not in FIELDS]
    if unknown:
        raise BadLine(f"unknown field {unknown[0][:60]!r} (known: {', '.join(FIELDS)})")
    request_id = optional_string(item, "id")
    if not request_id:
        raise BadLine("id is required (the id of the request the label is about)")
    given = [key for key in LABEL_FIELDS if item.get(key) is not None]
    if len(given) != 1:
        said = f"got {' and '.join(given)}" if given else "got none"
        raise BadLine(f"a label needs exactly one of correct, score, preferred_tier ({said})")
    correct = item.get("correct")
    if correct is not None and not isinstance(correct, bool):
        raise BadLine(f"correct must be true or false, got {kind(correct)}")
    score = optional_number(item, "score")
    if score is not None and not 0.0 <= score <= 1.0:
        raise BadLine(f"score must be in [0, 1], got {score}")
    preferred = optional_string(item, "preferred_tier")
    if preferred is not None and preferred not in tiers:
        raise BadLine(f"preferred_tier: unknown tier {preferred[:60]!r} (known: {', '.join(tiers)})")
    judged = optional_string(item, "tier") or ""
    if judged and judged not in tiers:
        raise BadLine(f"tier: unknown tier {judged[:60]!r} (known: {', '.join(tiers)})")
    if judged and preferred is not None:
        raise BadLine("tier: a preferred_tier label judges the request, not one tier's answer (drop tier)")
    at = optional_number(item, "at")
    if at is not None and at < 0:
        raise BadLine(f"at must be epoch seconds (0 or more), got {at}")
    label = Feedback(
        request_id=request_id,
        source=optional_string(item, "source") or DEFAULT_SOURCE,
        at=now if at is None else at,
        correct=correct,
        score=score,
        preferred_tier=preferred,
        tier=judged,
    )
    _as_the_reader_decodes(label, max_payload_bytes)
    return label


def _as_the_reader_decodes(label: Feedback, max_payload_bytes: int) -> None:
    """Round-trip through the feedback reader's own decoder (id and source lengths, the payload limit)."""
    from topics.errors import DecodeError
    from topics.feedback import Feedback

    try:
        Feedback.from_wire(label.to_wire(), max_payload_bytes)
    except DecodeError as exc:
        wire_names = {"id": "id", "src": "source", "pt": "preferred_tier"}
        where = next((user for wire, user in wire_names.items() if f"`$.{wire}`" in exc.detail), "label")
        raise BadLine(f"{where}: {exc.detail.split(' - at ')[0].lower()}") from None


async def _send(config: Config, bootstrap: str, labels: list[Feedback]) -> None:
    """Produce every label and wait for the broker's acks (a deployment from before labels gets the topic)."""
    from aiokafka import AIOKafkaProducer

    from infra.broker import kafka_options
    from topics.admin import ensure_topics
    from topics.produce import produce_all

    kafka = kafka_options(config.broker, bootstrap)
    topic = config.layout.feedback
    await ensure_topics(kafka, {topic: config.partitions()[topic]}, config.broker.replication_factor)
    producer = AIOKafkaProducer(**kafka, acks="all")
    await producer.start()
    try:
        await produce_all(producer, ((topic, label.request_id.encode(), label.to_wire(), ()) for label in labels))
    finally:
        await producer.stop()
