"""Start a local Ray bound to loopback, or join an existing cluster by address."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from infra.config import RayConfig
from topics.errors import TierflowError

PACKAGES = ("topics", "policies", "workers", "infra")
RAY_NAMESPACE = "tierflow"
"""Every driver joins this Ray namespace, so ``tierflow up``, ``down`` and ``status`` find the
supervisor (and the named replicas) another driver started."""
ROOT = Path(__file__).resolve().parent.parent


class RayStartError(TierflowError):
    """Ray could not be started or joined (not to be confused with Ray's own ``ray.exceptions.RayError``)."""


def start_ray(config: RayConfig) -> bool:
    """Connect this process to Ray; return True when it started a local Ray it must shut down.

    Locally, Ray binds to 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    keeps Linux from swapping in the routable address) and the dashboard is off.
    A remote cluster gets this project's packages shipped as ``py_modules``.

    Ray runs worker processes at niceness 15; next to a broker that many consumers
    poll every 10 ms, slow model workers starve (LLM portfolios therefore poll
    every 200 ms, see ``mmlu-llm.toml``).
    """
    if ray.is_initialized():
        return False
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        if config.address:
            modules = [str(ROOT / name) for name in PACKAGES]
            ray.init(
                address=config.address,
                namespace=RAY_NAMESPACE,
                runtime_env={"py_modules": modules},
                logging_level=logging.WARNING,
            )
            return False
        ray.init(
            num_cpus=config.num_cpus or max(4, os.cpu_count() or 1),
            namespace=RAY_NAMESPACE,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            logging_level=logging.ERROR,  # start-up notices go to Ray's own logs, not the user's terminal
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = config.address or "a local Ray"
        raise RayStartError(f"could not start or join {where}: {exc}") from exc
    return True


def stop_ray(started: bool) -> None:
    """Shut down only what ``start_ray`` started (never ``ray stop``)."""
    if started and ray.is_initialized():
        ray.shutdown()
