"""``tierflow status`` on the command line: its parser, one snapshot, and the live view.

``--once`` reads one snapshot and prints its tables (or, with ``--json``, the object
documented in :mod:`infra.status.render`); without it a rich Live view refreshes every
``--interval`` seconds until Ctrl-C or SIGTERM. rich and the Kafka clients are imported
when the command runs, so adding the parser to the CLI stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from infra.config import Config
from infra.status.reader import DEFAULT_WINDOW_S, StatusReader, collect_status
from infra.status.render import render, status_json
from infra.status.stats import Snapshot
from topics.errors import BrokerError, ConfigError

DEFAULT_INTERVAL_S = 2.0


def add_status_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``tierflow status`` to the CLI's subcommands (call :func:`run_status` with its arguments)."""
    status = sub.add_parser(
        "status",
        help="a live view of throughput, latency, cost against target, lag and the controller",
        description="Read the results, control and stage topics of a running pipeline (Kafka only: no Ray, "
        "no consumer group joined) and show results per second, latency percentiles, cost against the "
        "controller's targets, per-tier share, load and lag, and the controller's state. Refreshes until "
        "Ctrl-C; --once --json prints one JSON object for scripts.",
    )
    source = status.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="TOML config of the pipeline")
    source.add_argument("--portfolio", metavar="NAME", help="built-in portfolio (or a config file path)")
    status.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    status.add_argument("--namespace", default="", help="namespace to watch (default: the config's)")
    status.add_argument(
        "--window", type=float, default=DEFAULT_WINDOW_S, metavar="S", help="seconds of results to summarise"
    )
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")
    status.add_argument("--json", action="store_true", help="with --once: print one JSON object")
    status.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, metavar="S", help="refresh every S seconds (default 2)"
    )


def _resolve(args: argparse.Namespace) -> tuple[Config, str]:
    from infra.config import load_config, load_config_or_portfolio

    if args.window <= 0:
        raise ConfigError("--window must be > 0")
    if args.interval <= 0:
        raise ConfigError("--interval must be > 0")
    if args.json and not args.once:
        raise ConfigError("--json needs --once")
    config = load_config(args.config) if args.config else load_config_or_portfolio(args.portfolio)
    if args.namespace:
        config = replace(config, namespace=args.namespace)
        _ = config.layout  # validates the name
    bootstrap = args.bootstrap or config.broker.bootstrap_servers
    if not bootstrap:
        raise ConfigError("no bootstrap servers: pass --bootstrap (as printed by tierflow up)")
    return config, bootstrap


def run_status(args: argparse.Namespace) -> int:
    """``tierflow status``: 0 on success and on Ctrl-C; errors raise :class:`~topics.errors.TierflowError`."""
    from infra.broker import kafka_options

    config, bootstrap = _resolve(args)
    kafka = kafka_options(config.broker, bootstrap)
    if args.once:
        snapshot = asyncio.run(collect_status(kafka, config, args.window))
        if args.json:
            sys.stdout.write(json.dumps(status_json(snapshot), indent=2) + "\n")
        else:
            from rich.console import Console

            Console().print(render(snapshot))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_live(kafka, config, args.window, args.interval))
    return 0


async def _live(kafka: Mapping[str, Any], config: Config, window_s: float, interval_s: float) -> None:
    """Refresh a rich Live view every ``interval_s`` until Ctrl-C or SIGTERM; a failed refresh is shown and retried."""
    from rich.live import Live
    from rich.text import Text

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    reader = StatusReader(kafka, config)
    await reader.start()
    last: Snapshot | None = None
    try:
        with Live(Text("tierflow status: reading…"), auto_refresh=False, transient=False) as live:
            while not stop.is_set():
                collect = asyncio.ensure_future(reader.collect(window_s))
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait({collect, halt}, return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                if not collect.done():
                    collect.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await collect
                    break
                try:
                    last = collect.result()
                    live.update(render(last), refresh=True)
                except (BrokerError, ConfigError) as exc:
                    view = render(last, str(exc)) if last else Text(f"refresh failed: {exc}", style="bold red")
                    live.update(view, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval_s)
    finally:
        await reader.stop()
