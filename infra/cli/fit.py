"""``tierflow fit``: fit one lab method for a budget or a target accuracy and write a policy file.

The method is ``--method``; ``--policy`` is the old spelling, kept as a hidden alias because
elsewhere ``--policy`` names a policy file — the file this command writes (``--out``).
"""

from __future__ import annotations

import argparse

from infra.cli.common import Subparsers, add_trace_arguments, split_names


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit one policy for a budget or a target accuracy and write a policy file",
        description="Fit a lab method (--method) on the train split of a trace and pick the setting with the best "
        "train accuracy within --budget (mean cost per request), or the cheapest reaching "
        "--target-accuracy (default: the strongest single tier's). The policy file runs unchanged in "
        "tierflow up / demo --policy.",
    )
    add_trace_arguments(parser)
    # One of the two spellings is required; a required group lets either satisfy argparse.
    method = parser.add_mutually_exclusive_group(required=True)
    method.add_argument("--method", help="the lab method to fit, e.g. frugalgpt (required)")
    method.add_argument("--policy", dest="method", help=argparse.SUPPRESS)
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="X",
        help="mean cost per request to stay within (default: no budget)",
    )
    parser.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        metavar="ACC",
        help="accuracy to reach, cheapest (default: the strongest single tier's)",
    )
    parser.add_argument("--out", required=True, metavar="POLICY.json", help="where to write the policy file (required)")


def run(args: argparse.Namespace) -> int:
    """Write the policy file and print where its setting lands on train and on held-out items."""
    from rich.console import Console

    from infra.lab.evaluate import LabOptions, fit

    options = LabOptions(args.trace, args.method, (), split_names(args.tiers), args.train_fraction,
                         embedding=args.embedding, split_seed=args.split_seed)  # fmt: skip
    policy = fit(options, args.method, args.budget, args.target_accuracy, args.out, Console(stderr=True))
    train, test = policy.fitted["train"], policy.fitted["test"]
    print(
        f"{args.out}: {policy.name} at setting {policy.fitted['setting']:.4g}; train accuracy "
        f"{train['accuracy']:.1%} at {train['cost']:.3g}/request, held-out {test['accuracy']:.1%} at "
        f"{test['cost']:.3g}/request"
    )
    if "pareto_front" in policy.fitted:
        print("Pareto front on train (pick another point with --budget):")
        for point in policy.fitted["pareto_front"]:
            print(f"  λ {point['lam']:<10.4g} cost {point['cost']:<10.4g} expected accuracy "
                  f"{point['expected_accuracy']:.1%}")  # fmt: skip
    return 0
