"""``tierflow trace``: record every tier's answers on a seeded sample, the input of ``eval`` and ``fit``."""

from __future__ import annotations

import argparse

from infra.cli.common import Subparsers


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


def run(args: argparse.Namespace) -> int:
    # Progress goes to stderr: the trace file is the output.
    from rich.console import Console

    from infra.recorder import TraceOptions, run_trace

    options = TraceOptions(args.portfolio, args.dataset, args.n, args.seed, args.out, args.threads, args.verify)
    run_trace(options, Console(stderr=True))
    return 0
