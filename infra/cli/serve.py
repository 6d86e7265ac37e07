"""``tierflow serve``: an OpenAI-compatible HTTP endpoint in front of a pipeline (``infra/gateway``).

Without ``--config`` it starts what ``tierflow demo`` starts (the embedded broker, a local Ray,
the ``--portfolio``, default ``headlines``) and deploys the pipeline itself, so one command
gives a working endpoint. With ``--config`` on an external broker it serves the pipeline that
``tierflow up`` runs there; on the embedded broker it starts and deploys that config, as
without. The server binds 127.0.0.1 unless ``--host`` says otherwise; ``--workers N`` runs N
server processes on that one port (:mod:`infra.gateway.pool`).
"""

from __future__ import annotations

import argparse
import socket

from infra.cli.common import Subparsers, bootstrap_servers, note
from infra.config import Config, load_config, load_portfolio, portfolio_names
from topics.errors import ConfigError

DEFAULT_PORTFOLIO = "headlines"


def add_parser(subparsers: Subparsers) -> None:
    text = "serve an OpenAI-compatible API (chat, completions, models) in front of a pipeline"
    parser = subparsers.add_parser(
        "serve",
        help=text,
        description=text[0].upper() + text[1:] + ". Model `tierflow` routes; a tier's name asks for that tier.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="TOML config (default: a built-in portfolio)")
    source.add_argument(
        "--portfolio",
        default=None,
        help=f"built-in portfolio ({', '.join(portfolio_names())}); default: {DEFAULT_PORTFOLIO}",
    )
    parser.add_argument("--bootstrap", default="", help="broker address (default: the config's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (default 1); budgets are shared, rate limits are per process",
    )


def _config(args: argparse.Namespace) -> Config:
    if args.config:
        return load_config(args.config)
    return load_portfolio(args.portfolio or DEFAULT_PORTFOLIO)


def _bind(host: str, port: int) -> socket.socket:
    from infra.gateway.pool import claim_port

    try:
        return claim_port(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot bind {host}:{port} (--host/--port): {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in [1, 65535], got {args.port}")
    if not 1 <= args.workers <= 64:
        raise ConfigError(f"--workers must be in [1, 64], got {args.workers}")
    config = _config(args)
    sock = _bind(args.host, args.port)  # before anything starts: a port in use is a one-line error
    import uvicorn

    from infra.broker import EmbeddedBroker, make_provider
    from infra.gateway.app import build_app
    from infra.gateway.pool import ServerPool
    from infra.pipeline import Pipeline
    from infra.ray_cluster import start_ray, stop_ray

    provider = make_provider(config.broker)
    owned = isinstance(provider, EmbeddedBroker)
    ray_started = False
    try:
        bootstrap = provider.start() if owned else bootstrap_servers(config, args.bootstrap)
        pipeline = None
        if owned:
            ray_started = start_ray(config.ray)
            pipeline = Pipeline(config, bootstrap)
            note(f"deploying namespace {config.namespace} on the embedded broker {bootstrap}")
        tiers = ", ".join(tier.name for tier in config.tiers)
        processes = f", {args.workers} server processes" if args.workers > 1 else ""
        ready = f"serving http://{args.host}:{args.port}/v1 (models: tierflow, {tiers}{processes}); Ctrl-C stops"
        pool = ServerPool(config, bootstrap, args.host, args.port, extra=args.workers - 1)

        def on_ready() -> None:
            pool.start()
            note(ready)

        app = build_app(config, bootstrap, pipeline, on_ready=on_ready, on_stop=pool.stop)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
        stop_ray(ray_started)
        if owned:
            provider.stop()
    return 0
