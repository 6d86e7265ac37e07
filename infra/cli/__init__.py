"""The ``tierflow`` command line: demo, up, serve, send, feedback, budget, scale, status, down, trace, eval, fit.

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``;
:mod:`infra.cli.app` builds the parser from its dispatch table and turns every failure
tierflow anticipates into one line on stderr and a non-zero exit, with no traceback.
"""

from __future__ import annotations

from infra.cli.app import main

__all__ = ["main"]
