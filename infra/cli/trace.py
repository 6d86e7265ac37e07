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
