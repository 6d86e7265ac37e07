"""The top-level parser and the dispatch table from command name to the module that runs it.

Adding a command is one module with ``add_parser`` and ``run`` plus one line in :data:`COMMANDS`;
nothing here knows any command's flags. Every failure tierflow anticipates is one line on stderr
and a non-zero exit — no traceback — so scripts and people both see what is wrong.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Protocol

# ``import infra.cli.x as x``, not ``from infra.cli import x``: the latter names the package, whose
# ``__init__`` imports this module — a module-level cycle tests/unit/test_layers.py forbids.
import infra.cli.artifacts as artifacts
import infra.cli.budget as budget
import infra.cli.demo as demo
import infra.cli.down as down
import infra.cli.eval as eval_
import infra.cli.feedback as feedback
import infra.cli.fit as fit
import infra.cli.policy as policy
import infra.cli.scale as scale
import infra.cli.send as send
import infra.cli.serve as serve
import infra.cli.status as status
import infra.cli.trace as trace
import infra.cli.up as up
from infra.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, Subparsers, note


class Command(Protocol):
    """What a command module provides: its subparser, and the code that runs its parsed arguments."""

    def add_parser(self, subparsers: Subparsers) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: dict[str, Command] = {
    "demo": demo,
    "up": up,
    "down": down,
    "send": send,
    "feedback": feedback,
    "serve": serve,
    "budget": budget,
    "policy": policy,
    "scale": scale,
    "status": status,
    "trace": trace,
    "eval": eval_,
    "fit": fit,
    "models": artifacts.models,
    "data": artifacts.data,
}
"""In the order ``tierflow --help`` lists them; each module registers the subcommand named by its key."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierflow",
        description="Answer a stream of queries with a portfolio of models; confidence decides who answers.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what the Kafka client and Ray say (default: warnings only)"
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="the command to run (tierflow COMMAND --help: its flags)"
    )
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from infra.errors import Interrupted
    from topics.errors import TierflowError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="tierflow: %(message)s")
    if not args.verbose:
        # The client logs every failed connection attempt; our one-line error says it once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return COMMANDS[args.command].run(args)
    except Interrupted as exc:
        note(str(exc))
        return EXIT_INTERRUPTED
    except TierflowError as exc:
        note(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        note("interrupted; everything started was stopped")
        return EXIT_INTERRUPTED
