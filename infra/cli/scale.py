"""``tierflow scale``: set how many replicas one stage pool of a running deployment runs.

A signed ``scale_pool`` command, with the same HMAC, sequence and expiry rules as
``tierflow budget``: the budget controller checks and answers it, the namespace's
supervisor applies it (``infra/supervisor.py``). The pool and the count are checked
here first, against the config, so a typo is one line before anything is sent.
"""

from __future__ import annotations

import argparse

from infra.cli.common import Subparsers, bootstrap_servers, control_arguments, send_signed, signed_arguments
from infra.config import Config, load_config
from topics.errors import ConfigError

REFUSALS = {
    "unknown_pool": "unknown pool {pool!r}; the deployment's pools: {pools}",
    "too_few_replicas": (
        "{pool} runs at least {low} replica(s) (a fixed pool at zero would leave its topics unread; "
        "an autoscaled one may sleep at its min_replicas)"
    ),
    "more_replicas_than_partitions": (
        "{pool} can use at most {partitions} replicas: its topics have {partitions} partitions, and a consumer "
        "group gives each partition to one member (raise the pool's partitions in the config for more)"
    ),
    "above_max_replicas": "{pool} is autoscaled up to max_replicas {high}",
}


def add_parser(subparsers: Subparsers) -> None:
    text = "set how many replicas a stage pool of a running deployment runs"
    parser = subparsers.add_parser(
        "scale",
        parents=[signed_arguments(control_arguments())],
        help=text,
        description=text[0].upper() + text[1:] + ": a signed command the budget controller checks and answers, "
        "applied by the namespace's supervisor (tierflow up).",
    )
    parser.add_argument("pool", help="router, verifier, sink or worker.<tier>")
    parser.add_argument(
        "replicas",
        type=int,
        help="how many replicas: 1 up to the partitions of the pool's topics, or within an autoscaled pool's "
        "[min_replicas, max_replicas], where the autoscaler goes on from the new count",
    )


def check_scale(config: Config, pool: str, replicas: int) -> None:
    """The controller's own check (``policies.controller.scale_refusal``), said as one line before sending."""
    from policies.controller import scale_refusal

    pools = config.runtime("-").replica_bounds()
    reason = scale_refusal(pool, replicas, pools)
    if reason is not None:
        within = pools.get(pool)
        details = {"low": within.low, "high": within.high, "partitions": within.partitions} if within else {}
        raise ConfigError(REFUSALS[reason].format(pool=pool, pools=", ".join(pools), **details))


def run(args: argparse.Namespace) -> int:
    """0 when the controller accepted the command, 1 when it refused it."""
    from infra.broker import kafka_options
    from topics.control import CommandAction

    config = load_config(args.config)
    check_scale(config, args.pool, args.replicas)
    kafka = kafka_options(config.broker, bootstrap_servers(config, args.bootstrap))
    return send_signed(config, kafka, args, CommandAction.SCALE_POOL, pool=args.pool, replicas=args.replicas)
