"""``tierflow send``: produce requests from JSONL and, with ``--wait``, print their results as JSONL.

Every bad input is refused where it enters. Before anything is sent, each line is checked against
what the client can know itself: it is UTF-8 and one JSON object; it has only the known fields
(``input``, ``id``, ``deadline_s``, ``allowed_tiers``, ``tenant``) with the right types; a deadline
is a finite number of seconds above 0; ``allowed_tiers`` is a list of tiers the config names (a
lone string is refused, not read as one tier: ``"large"`` meant as a list is the likelier
mistake, and guessing hides it); an id does not repeat an earlier line; and the built ``Request``
survives the wire decoder the router runs (``topics.messages``/``topics.wire``: the id and tenant
lengths, and ``limits.max_payload_bytes`` of the config), so those limits are the decoder's own,
never copied here. Each bad line is one stderr line naming the line and the field, and the exit
code is 2.

A bad line sends nothing, not even the good lines: a file is one batch, and sending part of it
would leave the user to work out which part went; after fixing the file, a rerun would send the
good lines a second time, under ids the pipeline has already answered. So every line is checked
first, every bad one reported, and the send happens only when none is bad.

What only the pipeline can refuse (a deployment whose limits are tighter than this config says, a
stage that fails on a record) ends as a dead letter. With ``--wait`` each request that ended so is
named on stderr with the stage and reason, and the exit code is 1, as it is when results are
missing; the requests a broker lost (it restarted without its data) are sent again, so every
request sent gets a result, a dead letter, or is counted as missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra.cli.common import EXIT_ERROR, EXIT_INCOMPLETE, Subparsers, bootstrap_servers, note
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
    from infra.client import Collected
    from topics.messages import Request

FIELDS = ("input", "id", "deadline_s", "allowed_tiers", "tenant")
"""The keys an input line may have; any other is refused (a misspelt ``deadline`` would be ignored)."""

_USER_NAMES = {"deadline": "deadline_s", "hints.allowed_tiers": "allowed_tiers"}
"""Request fields whose input key differs from their name: errors say what the user wrote."""


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "send",
        help="produce requests from JSONL and optionally wait for their results",
        description='Each input line is {"input": "...", "id": optional, "deadline_s": optional, '
        '"allowed_tiers": optional list, "tenant": optional}. Every line is checked before any is sent: '
        "a bad line sends nothing (exit 2). With --wait, exit 1 when a request has no result or ended "
        "as a dead letter.",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="TOML config (namespace, tiers, limits, broker; required)"
    )
    parser.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    parser.add_argument("--file", default="-", metavar="F", help="JSONL input (default: stdin)")
    parser.add_argument(
        "--wait", action="store_true", help="print each request's result as JSONL (default: don't wait)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S", help="how long --wait waits (default 120)")


@dataclass
class Input:
    """What the input file holds: the requests of its good lines, and one message per bad line."""

    name: str
    """``stdin`` or the file's path, as messages name it."""
    requests: list[Request] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    """Input line of each request id, so a dead letter can point back at its line."""
    problems: list[str] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    """Check every line before sending any: 2 when one is bad; 1 when --wait missed results or got dead letters."""
    config = load_config(args.config)
    bootstrap = bootstrap_servers(config, args.bootstrap)
    given = read_input(args.file, lambda lines, name: read_requests(lines, name, config))
    if given.problems:
        report_bad_lines(given.problems, given.name)
        return EXIT_ERROR
    return asyncio.run(_send(config, bootstrap, given, args.wait, args.timeout))


def read_requests(source: Iterable[bytes], name: str, config: Config, now: float | None = None) -> Input:
    """Check every line of ``source`` (raw bytes, blank lines skipped); problems read ``name:line: …``."""
    now = time.time() if now is None else now
    tiers = tuple(tier.name for tier in config.tiers)
    given = Input(name)
    for number, line in numbered_lines(source):
        try:
            request = check_line(line, tiers, config.limits.max_payload_bytes, now)
            first = given.lines.get(request.id)
            if first is not None:
                raise BadLine(f"id {request.id!r} repeats line {first}")
        except BadLine as exc:
            given.problems.append(f"{name}:{number}: {exc}")
            continue
        given.lines[request.id] = number
        given.requests.append(request)
    return given


def check_line(line: bytes, tiers: tuple[str, ...], max_payload_bytes: int, now: float) -> Request:
    """The Request one input line asks for, or :class:`BadLine` naming the first field that is wrong."""
    from topics.messages import Hints, Request

    item = json_object(line, 'a JSON object with a string "input"')
    unknown = [key for key in item if key not in FIELDS]
    if unknown:
        raise BadLine(f"unknown field {unknown[0][:60]!r} (known: {', '.join(FIELDS)})")
    if "input" not in item:
        raise BadLine("input is required (a string)")
    if not isinstance(item["input"], str):
        raise BadLine(f"input must be a string, got {kind(item['input'])}")
    request_id = optional_string(item, "id")
    if request_id == "":
        raise BadLine("id must not be empty (leave it out for a generated one)")
    deadline_s = _deadline(item)
    request = Request(
        id=request_id or uuid.uuid4().hex,
        input=item["input"],
        created_at=now,
        deadline=None if deadline_s is None else now + deadline_s,
        hints=Hints(allowed_tiers=_allowed_tiers(item.get("allowed_tiers"), tiers)),
        tenant=optional_string(item, "tenant") or "",
    )
    _as_the_router_decodes(request, max_payload_bytes)
    return request


def _deadline(item: dict[str, Any]) -> float | None:
    """Seconds from now, more than 0."""
    seconds = optional_number(item, "deadline_s", "a number of seconds")
    if seconds is not None and seconds <= 0:
        raise BadLine(f"deadline_s must be more than 0 seconds, got {item['deadline_s']}")
    return seconds


def _allowed_tiers(value: object, tiers: tuple[str, ...]) -> tuple[str, ...] | None:
    """A list of the config's tier names; ``None`` (absent) allows all. A string is refused, not split."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadLine(f"allowed_tiers must be a list of tier names, got {kind(value)}")
    if not value:
        raise BadLine("allowed_tiers must name at least one tier (leave it out to allow all)")
    for position, name in enumerate(value):
        if not isinstance(name, str):
            raise BadLine(f"allowed_tiers must be a list of tier names, got {kind(name)} at [{position}]")
        if name not in tiers:
            raise BadLine(f"allowed_tiers: unknown tier {name[:60]!r} (known: {', '.join(tiers)})")
    return tuple(value)


def _as_the_router_decodes(request: Request, max_payload_bytes: int) -> None:
    """Round-trip through the router's own decoder, so its limits are checked here without a copy of them."""
    from topics.errors import DecodeError
    from topics.messages import Request

    wire = request.to_wire()
    try:
        Request.from_wire(wire, max_payload_bytes)
    except DecodeError as exc:
        if exc.reason == "too_large":
            raise BadLine(
                f"input too large: the request encodes to {len(wire)} bytes, "
                f"over limits.max_payload_bytes ({max_payload_bytes})"
            ) from None
        raise BadLine(_field_error(request, exc.detail)) from None


def _field_error(request: Request, detail: str) -> str:
    """msgspec's ``Expected … - at `$.tn``` in the input's words: ``tenant: expected … (got 250 characters)``.

    The path holds wire keys (``tn``, ``h.at[0]``); each is looked up in the struct's own field table.
    """
    import msgspec

    found = re.fullmatch(r"(.*) - at `\$((?:\.\w+|\[\d+\])*)`", detail)
    if found is None:
        return f"not a valid request: {detail}"
    message, path = found.groups()
    names: list[str] = []
    value: Any = request
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        if index and names:
            names[-1] += f"[{index}]"
            value = value[int(index)] if isinstance(value, tuple) and int(index) < len(value) else None
            continue
        fields = msgspec.structs.fields(type(value)) if isinstance(value, msgspec.Struct) else ()
        name = next((f.name for f in fields if f.encode_name == key), None)
        if name is None:
            return f"not a valid request: {detail}"
        names.append(name)
        value = getattr(value, name)
    dotted = ".".join(names)
    shown = next((user + dotted[len(key) :] for key, user in _USER_NAMES.items() if dotted.startswith(key)), dotted)
    got = f" (got {len(value)} characters)" if isinstance(value, str) else ""
    return f"{shown}: {message[:1].lower()}{message[1:]}{got}"


async def _send(config: Config, bootstrap: str, given: Input, wait: bool, timeout_s: float) -> int:
    from infra.broker import kafka_options
    from infra.client import RequestProducer

    kafka = kafka_options(config.broker, bootstrap)
    producer = RequestProducer(kafka, config.layout)
    await producer.start()
    try:
        await producer.send_many(given.requests)
        note(f"sent {len(given.requests)} requests")
        if not wait:
            return 0
        return await _wait_and_print(config, kafka, producer, given, timeout_s)
    finally:
        await producer.stop()


async def _wait_and_print(config: Config, kafka: dict[str, Any], producer: Any, given: Input, timeout_s: float) -> int:
    """Print each request's result as JSONL; name each dead letter on stderr; resubmit what a lost broker dropped."""
    from infra.client import ResultCollector
    from topics.admin import ensure_topics
    from workers.results_sink import result_to_json

    requests = given.requests

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
    collected = collector.collected
    for request in requests:
        result = collected.results.get(request.id)
        if result is not None:
            print(json.dumps(result_to_json(result)))
    dead = report_dead_letters(given, collected)
    if missing:
        note(f"{len(missing)} requests have no result after {timeout_s:.0f}s")
    return EXIT_INCOMPLETE if dead or missing else 0


def report_dead_letters(given: Input, collected: Collected) -> int:
    """Name on stderr each request that ended as a dead letter, with its line, stage and reason; their count."""
    dead = 0
    for request in given.requests:
        letter = collected.dead_letter_of(request.id)
        if letter is None:
            continue
        dead += 1
        why = letter.detail if letter.detail.startswith(letter.reason) else f"{letter.reason}: {letter.detail}"
        line = given.lines[request.id]
        note(f"{given.name}:{line}: request {request.id!r} ended as a dead letter at the {letter.stage} ({why})")
    if dead:
        note(f"{dead} of {len(given.requests)} requests ended as dead letters")
    return dead
