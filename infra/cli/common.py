"""Helpers several commands share: exit codes, the stderr note, bootstrap servers, lab arguments."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from rich.console import Console

    from infra.config import Config

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns; every command module registers itself on one."""

EXIT_INCOMPLETE = 1
"""The command ran but not all of its work came back (``send --wait``: a result missing, a dead letter)."""
EXIT_ERROR = 2
"""An error tierflow anticipates, said in one line: a bad config, argument or input, a broker out of reach."""
EXIT_INTERRUPTED = 130


def note(message: str) -> None:
    """Say something on stderr as ``tierflow: …``: stdout carries only results, so scripts can pipe it."""
    print(f"tierflow: {message}", file=sys.stderr)


def stdout_console() -> Console:
    """The console for a command's report: a terminal's width, or wide enough that a piped or
    redirected table is written whole instead of cut to 80 columns."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=400)


def bootstrap_servers(config: Config, given: str) -> str:
    """``--bootstrap`` if given, else the config's; commands that join a running pipeline need one."""
    from topics.errors import ConfigError

    bootstrap = given or config.broker.bootstrap_servers
    if not bootstrap:
        raise ConfigError("no bootstrap servers: pass --bootstrap (as printed by tierflow up)")
    return bootstrap


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """The trace and its split, which ``eval`` and ``fit`` read the same way."""
    parser.add_argument("--trace", required=True, metavar="FILE", help="a trace written by tierflow trace (required)")
    parser.add_argument("--tiers", default="", help="comma-separated tiers to use, cheapest first (default: all)")
    parser.add_argument(
        "--train-fraction", type=float, default=0.5, metavar="F", help="share of items to fit on (default 0.5)"
    )
    parser.add_argument(
        "--split-seed", type=int, default=0, metavar="N", help="draw another train/test split (default 0: standard)"
    )
    from policies.features import DEFAULT_EMBEDDING, EMBEDDINGS

    parser.add_argument(
        "--embedding",
        choices=list(EMBEDDINGS),
        default=DEFAULT_EMBEDDING,
        help=f"query embedding the routers read (default {DEFAULT_EMBEDDING}: fast; e5-small-q4: a sentence encoder)",
    )


def split_names(text: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped: ``"a, b,"`` is ``("a", "b")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def control_arguments() -> argparse.ArgumentParser:
    """Flags of every command that talks to a running deployment's control topic."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", required=True, metavar="FILE", help="TOML config of the running pipeline (required)"
    )
    common.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    common.add_argument(
        "--timeout", type=float, default=15.0, metavar="S", help="how long to wait for the controller (default 15)"
    )
    return common


def signed_arguments(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``common`` plus the flags of a signed command (``budget set``, ``scale``…)."""
    signed = argparse.ArgumentParser(add_help=False, parents=[common])
    signed.add_argument("--key-id", default=None, help="which configured key signs (default: the first)")
    signed.add_argument(
        "--issuer", default=os.environ.get("USER", ""), help="who you are, for the log (default: $USER)"
    )
    signed.add_argument(
        "--valid-for", type=float, default=300.0, metavar="S", help="command expires after S seconds (default 300)"
    )
    return signed


def send_signed(config: Config, kafka: dict[str, Any], args: argparse.Namespace, action: Any, **fields: Any) -> int:
    """Sign a command with the configured key, send it, print the controller's answer: 0 accepted, 1 refused."""
    from infra.control_client import new_command, send_command, signing_key, trusted_keys

    kid, key = signing_key(config, args.key_id)
    command = new_command(action, kid, key, now=time.time(), validity_s=args.valid_for, issuer=args.issuer, **fields)
    reply = asyncio.run(send_command(kafka, config.layout.control, command, args.timeout, trusted=trusted_keys(config)))
    if reply.accepted:
        print(f"tierflow: accepted: {reply.reason}")
        return 0
    note(f"refused by the controller: {reply.reason}")
    return 1
