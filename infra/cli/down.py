"""``tierflow down``: stop a namespace's deployment gracefully through its supervisor.

Every replica finishes its batch, commits and leaves its group; then the budget
controller and the supervisor stop. The broker keeps what it holds: requests sent
after ``down`` wait in Kafka for the next ``up``.
"""

from __future__ import annotations

import argparse

from infra.cli.common import EXIT_INCOMPLETE, Subparsers, note
from infra.config import load_config
from topics.errors import ConfigError

NO_CLUSTER = (
    "tierflow down needs [ray] address: without a Ray cluster the deployment lives inside its tierflow up; "
    "stop that one with Ctrl-C"
)


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "down",
        help="stop the deployment of a config's namespace (finish, commit, leave)",
        description="Stop every stage replica, the budget controller and the supervisor of the config's "
        "namespace on the Ray cluster its [ray] address names; what the broker holds stays there.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML config (required)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="bound on the graceful stop (default 60 s)"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not config.ray.address:
        raise ConfigError(NO_CLUSTER)
    from infra.ray_cluster import start_ray
    from infra.supervisor import find_supervisor, stop_supervisor

    start_ray(config.ray)
    supervisor = find_supervisor(config.namespace)
    if supervisor is None:
        note(f"no deployment of namespace {config.namespace} runs on {config.ray.address}")
        return EXIT_INCOMPLETE
    state = stop_supervisor(supervisor, args.timeout)
    if state.get("error"):
        note(f"namespace {config.namespace} stopped; it had failed: {state['error']}")
        return EXIT_INCOMPLETE
    note(f"namespace {config.namespace} stopped: every replica finished its batch, committed and left")
    return 0
