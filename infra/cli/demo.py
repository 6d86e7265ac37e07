"""``tierflow demo``: the whole pipeline on an embedded broker and a local Ray, then a report."""

from __future__ import annotations

import argparse

from infra.cli.common import Subparsers
from infra.config import portfolio_names


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the pipeline on an embedded broker and local Ray, then report",
        description="Start an embedded broker and a local Ray, stream held-out items of the "
        "portfolio's dataset through router, tiers and verifier, and print a report.",
    )
    parser.add_argument(
        "--portfolio",
        default="headlines",
        help=f"built-in portfolio ({', '.join(portfolio_names())}); default: headlines",
    )
    parser.add_argument(
        "--requests", type=int, default=None, metavar="N", help="requests to stream (default: the portfolio's, 500)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="R", help="requests per second (default 0: as fast as possible)"
    )
    parser.add_argument("--seed", type=int, default=0, help="which held-out items are sampled (default 0)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="give up after S seconds (default 600)"
    )
    parser.add_argument("--json", default="", metavar="PATH", help="also write the report as JSON (default: don't)")
    parser.add_argument(
        "--run-dir", default="", metavar="DIR", help="keep broker log and results here (default: a new temporary dir)"
    )
    parser.add_argument(
        "--policy",
        default="",
        metavar="FILE",
        help="run a fitted policy file (tierflow fit) instead of the portfolio's policies (default: none)",
    )


def run(args: argparse.Namespace) -> int:
    """0 when every request got exactly one result; 1 when any was lost or answered twice."""
    from topics.errors import ConfigError

    if args.requests is not None and args.requests < 1:
        raise ConfigError("--requests must be >= 1")
    if args.rate < 0:
        raise ConfigError("--rate must be >= 0")
    from infra.demo import DemoOptions, run_demo

    report = run_demo(
        DemoOptions(
            args.portfolio, args.requests, args.rate, args.seed, args.timeout, args.json, args.run_dir, args.policy
        )
    )
    return 0 if report["lost"] == 0 and report["duplicates"] == 0 else 1
