"""``tierflow status``: a thin shim — the parser and the live view belong to :mod:`infra.status`.

Imports are deferred so that building the parser does not load the status reader's dependencies
until someone runs ``status``.
"""

from __future__ import annotations

import argparse

from infra.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    from infra.status import add_status_parser

    add_status_parser(subparsers)


def run(args: argparse.Namespace) -> int:
    from infra.status import run_status

    return run_status(args)
