"""``tierflow eval``: fit lab methods on a trace's train split and compare them on its test split.

The methods to compare are ``--methods``; ``--policy`` is the old spelling, kept as a hidden alias
because elsewhere ``--policy`` names a policy file.
"""

from __future__ import annotations

import argparse

from infra.cli.common import Subparsers, add_trace_arguments, split_names, stdout_console


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="fit policies on a trace's train split and compare them on its test split",
        description="Fit each lab method (--methods) on the train split of a trace, sweep its threshold (or budget), "
        "simulate every setting on the test split with the pipeline's own decision code, and report "
        "accuracy-cost curves, APGR, CPT(50%), CPT(80%), AIQ and the cost at the strongest tier's "
        "accuracy, next to every single tier, the random mix and the oracle. On a trace built from the stream "
        "(requests with only the tiers that ran), each method at the setting fit picks and each single tier is "
        "reported as an off-policy estimate (--estimator) over every test request, with a 95% bootstrap interval.",
    )
    add_trace_arguments(parser)
    methods = parser.add_mutually_exclusive_group()
    methods.add_argument(
        "--methods", default="all", metavar="A,B", help="comma-separated lab methods to compare, or all (default: all)"
    )
    methods.add_argument("--policy", dest="methods", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--budget", default="", metavar="X,Y", help="comma-separated budgets to report accuracy at (default: none)"
    )
    parser.add_argument("--json", default="", metavar="PATH", help="write the report as JSON (default: don't)")
    parser.add_argument(
        "--plot", default="", metavar="PATH", help="write the accuracy-cost plot as PNG (default: don't)"
    )
    parser.add_argument("--md", default="", metavar="PATH", help="write the metrics table as Markdown (default: don't)")
    parser.add_argument(
        "--estimator",
        choices=["dr", "ips"],
        default="dr",
        help="off-policy estimator for a trace built from the stream, whose requests lack the tiers that did not run "
        "(default dr: doubly robust; ips: inverse propensity); a complete trace is simulated exactly",
    )
    shadow = parser.add_argument_group(
        "shadow",
        "--shadow CANDIDATE --live LIVE: instead of fitting methods, run two policy files over every request "
        "of the trace and report the candidate's estimated accuracy and cost against the live policy's, with "
        "95% intervals (the live policy's figures are measured on its own path, the candidate's estimated).",
    )
    shadow.add_argument("--shadow", default="", metavar="CANDIDATE.json", help="the candidate policy file")
    shadow.add_argument("--live", default="", metavar="LIVE.json", help="the policy file that ran (with --shadow)")


def run(args: argparse.Namespace) -> int:
    """Progress goes to stderr, the report to stdout and to the files asked for."""
    from rich.console import Console

    from infra.lab.evaluate import LabOptions, evaluate, print_report, write_outputs
    from topics.errors import ConfigError

    if args.shadow or args.live:
        return _shadow(args)
    try:
        budgets = tuple(float(b) for b in split_names(args.budget))
    except ValueError as exc:
        raise ConfigError(f"--budget must be comma-separated numbers: {exc}") from exc
    options = LabOptions(args.trace, args.methods, budgets, split_names(args.tiers), args.train_fraction,
                         embedding=args.embedding, split_seed=args.split_seed, estimator=args.estimator)  # fmt: skip
    report = evaluate(options, Console(stderr=True))
    print_report(report, stdout_console())
    write_outputs(report, args.json, args.plot, args.md)
    return 0


def _shadow(args: argparse.Namespace) -> int:
    """The candidate against the live policy: a table on stdout, and the JSON when asked."""
    import json

    from rich.table import Table

    from infra.lab.shadow import shadow_report
    from topics.errors import ConfigError

    if not (args.shadow and args.live):
        raise ConfigError("--shadow CANDIDATE.json and --live LIVE.json go together")
    report = shadow_report(args.trace, args.shadow, args.live, args.estimator)
    doc = report.as_dict()
    table = Table(title=f"{args.trace}: {report.requests} requests, {report.explored} explored ({report.estimator})")
    for column in ("", "policy", "accuracy", "95% interval", "cost/request", "95% interval", "observed"):
        table.add_column(column, justify="left" if column in ("", "policy") else "right")
    for role in ("live", "candidate"):
        p = doc[role]
        low, high = p["accuracy_ci"]
        c_low, c_high = p["cost_ci"]
        accuracy = (f"{p['accuracy']:.1%}", f"{low:.1%} to {high:.1%}")
        cost = (f"{p['cost_per_request']:.4g}", f"{c_low:.4g} to {c_high:.4g}")
        table.add_row(role, p["name"], *accuracy, *cost, f"{p['observed']} of {report.requests}")
    stdout_console().print(table)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=2)
    return 0
