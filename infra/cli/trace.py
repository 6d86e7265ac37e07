"""``tierflow trace``: record every tier's answers on a seeded sample, the input of ``eval`` and ``fit``."""

from __future__ import annotations

import argparse

from infra.cli.common import Subparsers, stdout_console


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="record every tier's answers on a seeded sample (JSONL trace; resumable)",
        description="Run every tier of a portfolio on N seeded items of a data set and write one row per "
        "item x tier: output, correct, confidence features, tokens, latency, cost. Running it again "
        "resumes where it stopped.",
    )
    parser.add_argument(
        "--portfolio", default="headlines", help="built-in portfolio name or config file (default: headlines)"
    )
    parser.add_argument("--dataset", default="", help="sarcasm, mmlu or synthetic (default: the portfolio's)")
    parser.add_argument("--n", type=int, default=100, help="items to sample (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="which items are sampled (default 0)")
    parser.add_argument("--out", default="trace.jsonl", metavar="FILE", help="trace file (default trace.jsonl)")
    parser.add_argument(
        "--threads", type=int, default=0, help="llama.cpp threads per LLM tier (default: the portfolio's)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="LLM tiers also judge their own answers (verify_p, for AutoMix; default: off)",
    )
    stream = parser.add_argument_group(
        "from the stream",
        "--from-kafka builds the trace from a running (or stopped) deployment's topics instead: every "
        "answer of every tier that ran (live paths and exploration copies), correctness from the feedback "
        "labels, and each row's propensity. --portfolio, --dataset, --n and --seed do not apply.",
    )
    stream.add_argument("--from-kafka", action="store_true", help="read the deployment's topics (needs --config)")
    stream.add_argument("--config", default="", metavar="FILE", help="the deployment's TOML config")
    stream.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    stream.add_argument(
        "--since",
        default="",
        metavar="T",
        help="only results completed since T: epoch seconds, an ISO time, or an age like 30m, 6h, 2d (default: all)",
    )
    stream.add_argument(
        "--one-right-answer",
        action="store_true",
        help="one output is right per query (classification, multiple choice): an answer labelled correct "
        "makes every different answer wrong (default: only equal outputs share a label)",
    )
    commands = parser.add_subparsers(
        dest="trace_command", metavar="import", help="or: build a trace from a table of outcomes you already have"
    )
    importing = commands.add_parser(
        "import",
        help="build a trace from a table of per-model outcomes (CSV, JSONL or Parquet)",
        description="Build a trace from a table of per-model outcomes: wide (a row per item, columns per "
        "model) or long (a row per item and model). Say which column holds what in a TOML map (--map) "
        "or with the flags below (they override the map); '{model}' in a column name stands for each "
        "model of a wide table. Example: tierflow trace import mmlu.csv --input prompt --correct '{model}' "
        "--models gpt-4-1106-preview,mistralai/Mixtral-8x7B-Instruct-v0.1 --price gpt-4-1106-preview=0.0124 "
        "--price mistralai/Mixtral-8x7B-Instruct-v0.1=0.0006",
    )
    importing.add_argument("table", help="the table: .csv, .jsonl or .parquet")
    importing.add_argument("--map", metavar="FILE", help="TOML: layout, id, input, category, correct, cost, …")
    importing.add_argument("--out", default="trace.jsonl", metavar="FILE", help="trace file (default trace.jsonl)")
    importing.add_argument("--layout", choices=("wide", "long"), help="wide (default) or long")
    for name, text in (
        ("id", "item id column (default: the row number; long: the input)"),
        ("input", "the query column"),
        ("category", "category column (optional)"),
        ("dataset", "the trace's data set name (default: imported)"),
        ("correct", "correct column: a bool, or a score counted correct at --correct-at"),
        ("cost", "cost column (or --price)"),
        ("confidence", "confidence column in [0, 1] (optional)"),
        ("tokens", "token count column, priced by [token_prices] in the map"),
        ("model", "long: the column naming each row's model (default: model)"),
    ):
        importing.add_argument(f"--{name}", metavar="COLUMN" if name != "dataset" else "NAME", help=text)
    importing.add_argument("--models", metavar="A,B", help="wide: the models, comma-separated; long: those to keep")
    importing.add_argument("--correct-at", type=float, help="a score at or above this is correct (default 0.5)")
    importing.add_argument(
        "--price", action="append", default=[], metavar="MODEL=COST", help="cost per call of a model (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    if args.trace_command == "import":
        return _import(args)
    if args.from_kafka:
        return _from_kafka(args)
    # Progress goes to stderr: the trace file is the output.
    from rich.console import Console

    from infra.recorder import TraceOptions, run_trace

    options = TraceOptions(args.portfolio, args.dataset, args.n, args.seed, args.out, args.threads, args.verify)
    run_trace(options, Console(stderr=True))
    return 0


def _import(args: argparse.Namespace) -> int:
    from infra.lab.importer import ImportMap, import_table, read_map, summary_table
    from topics.errors import ConfigError
    from topics.traces import write_trace

    doc = read_map(args.map) if args.map else {}
    for key in ("layout", "id", "input", "category", "dataset", "correct", "cost", "confidence", "tokens", "model"):
        if getattr(args, key) is not None:
            doc[key] = getattr(args, key)
    if args.models:
        doc["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.correct_at is not None:
        doc["correct_at"] = args.correct_at
    prices = dict(doc.get("prices", {}))
    for given in args.price:
        model, sep, value = given.rpartition("=")
        try:
            prices[model] = float(value)
        except ValueError:
            sep = ""
        if not sep or not model:
            raise ConfigError(f"--price {given!r} must be MODEL=COST, for example gpt-4o=0.005")
    if prices:
        doc["prices"] = prices
    mapping = ImportMap.from_dict(doc, args.map or "the import flags")
    rows = import_table(args.table, mapping)
    write_trace(args.out, rows)
    console = stdout_console()
    items, tiers = len({r.item_id for r in rows}), len({r.tier for r in rows})
    console.print(f"wrote {args.out}: {items} items x {tiers} tiers", soft_wrap=True, highlight=False)
    console.print(summary_table(rows))
    return 0


AGE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def parse_since(text: str, now: float) -> float:
    """``--since`` as epoch seconds: a number, an ISO-8601 time (UTC unless it says), or an age (``30m``)."""
    from datetime import UTC, datetime

    from topics.errors import ConfigError

    text = text.strip()
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    if text[-1] in AGE_UNITS:
        try:
            return now - float(text[:-1]) * AGE_UNITS[text[-1]]
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: give epoch seconds, an ISO time (2026-12-07T06:00) or an age (30m, 6h, 2d)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _from_kafka(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from infra.broker import kafka_options
    from infra.cli.common import bootstrap_servers, note
    from infra.config import load_config
    from infra.lab.stream_trace import read_stream, stream_trace
    from topics.errors import ConfigError, DataError
    from topics.traces import write_trace

    if not args.config:
        raise ConfigError("--from-kafka needs --config FILE (the deployment whose topics to read)")
    config = load_config(args.config)
    since = parse_since(args.since, time.time())
    kafka = kafka_options(config.broker, bootstrap_servers(config, args.bootstrap))
    note(f"reading {config.layout.namespace}'s results, answers, exploration copies and labels")
    join = asyncio.run(read_stream(kafka, config.layout, config.partitions(), config.broker.replication_factor))
    trace = stream_trace(join, since, args.one_right_answer)
    if not trace.rows:
        raise DataError(
            f"no labelled answer among {len(join.results)} results: send labels with tierflow feedback "
            "(and turn on [exploration] to see the tiers the policy did not choose)"
        )
    write_trace(args.out, trace.rows)
    print(
        f"wrote {args.out}: {trace.requests} requests ({trace.explored} explored), {len(trace.rows)} rows; "
        f"{trace.unlabelled} results without a deciding label left out"
    )
    for topic, count in sorted(join.undecodable.items()):
        note(f"skipped {count} records of {topic} that do not decode (the stages dead-lettered them)")
    return 0
