"""Stage pools as Ray actors: each replica runs one StageLoop with its own Kafka clients.

Kafka is the data plane; Ray gives placement, resources and restarts. The constructor
starts the loop on its own thread (:class:`~workers.loop_thread.LoopThread`), so a
killed replica that Ray restarts (``max_restarts``) resumes from the last committed
offsets by itself, whoever created it and whether or not its creator still lives;
``run()`` waits for the loop and returns its counters. SIGTERM (or ``stop()``) is a
graceful stop: the batch in flight finishes and commits, the consumer leaves its
group, and the replica exits without being restarted.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import asdict, dataclass
from typing import Any

import ray

from policies.base import PostHocPolicy
from policies.registry import make_post_hoc, make_pre_call
from topics.errors import ConfigError
from workers.context import StageContext
from workers.loop_thread import LoopThread
from workers.model_worker import ModelWorker
from workers.policy_feed import PolicyFeed
from workers.results_sink import ResultsSink
from workers.router import Router
from workers.spec import DeploymentSpec
from workers.stage import Handler, StageLoop, StageStats
from workers.telemetry import setup_telemetry
from workers.verifier import Verifier

STAGE_KINDS = ("router", "worker", "verifier", "sink")


@dataclass(frozen=True, slots=True)
class StageSpec:
    """Everything a replica needs to build its stage; picklable, sent once at creation."""

    kind: str
    deployment: DeploymentSpec
    tier: str = ""
    replica: int = 0

    @property
    def pool(self) -> str:
        return f"worker.{self.tier}" if self.kind == "worker" else self.kind


def post_hoc_policy(deployment: DeploymentSpec) -> PostHocPolicy:
    """The verifier's policy as configured (the budget controller steers from its thresholds)."""
    params = dict(deployment.policies.post_hoc_params)
    if deployment.policies.post_hoc == "threshold":
        params.setdefault("thresholds", {tier.name: tier.threshold for tier in deployment.tiers})
    return make_post_hoc(deployment.policies.post_hoc, params)


def _policy_feed(spec: StageSpec) -> PolicyFeed | None:
    """Routers and verifiers follow the controller's updates when it runs."""
    deployment = spec.deployment
    if not deployment.control.enabled:
        return None
    return PolicyFeed(deployment.kafka.options(), deployment.layout.control)


def build_handler(spec: StageSpec, context: StageContext) -> Handler[Any]:
    config = spec.deployment
    if spec.kind == "router":
        policy = make_pre_call(config.policies.pre_call, config.policies.pre_call_params)
        return Router(context, policy, _policy_feed(spec))
    if spec.kind == "verifier":
        return Verifier(context, post_hoc_policy(config), _policy_feed(spec))
    if spec.kind == "worker":
        return ModelWorker(context, spec.tier)
    if spec.kind == "sink":
        if not config.results_path:
            raise ConfigError("the results sink needs results_path in the config")
        return ResultsSink(context, config.results_path)
    raise ConfigError(f"unknown stage kind {spec.kind!r}; known: {', '.join(STAGE_KINDS)}")


def build_loop(spec: StageSpec) -> StageLoop[Any]:
    config = spec.deployment
    handler = build_handler(spec, StageContext(config))
    # The client id names the replica in the broker's logs (and lets a fault test's proxy single it out).
    # Each incarnation gets its own (the pid): Tansu lost a record when a replacement replica reused the
    # client id of the one it replaced.
    client_id = f"{config.namespace}.{spec.pool}.{spec.replica}.{os.getpid()}"
    kafka = {**config.kafka.options(), "client_id": client_id}
    return StageLoop(
        handler,
        kafka,
        config.layout.dlq,
        group_id=f"{config.namespace}.{spec.pool}",
        layout=config.layout,
        max_batch=config.limits.max_batch,
        session_timeout_ms=config.session_timeout_ms,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        idle_fetch_wait_ms=config.idle_fetch_wait_ms,
        commit_interval_ms=config.commit_interval_ms,
        poll_interval_ms=config.poll_interval_ms,
        max_payload_bytes=config.limits.max_payload_bytes,
        max_rss_mb=config.limits.max_rss_mb,
    )


@ray.remote(max_restarts=-1, max_task_retries=-1, concurrency_groups={"control": 2})  # type: ignore[call-overload]  # stubs lack concurrency_groups
class StageActor:
    """One replica of a stage pool.

    A threaded actor on purpose: its constructor runs on the process's main thread,
    the only one where a SIGTERM handler can be installed (an async actor's cannot);
    the loop runs on a thread of its own while ``run``, ``stop`` and ``stats`` answer
    from Ray's threads.
    """

    def __init__(self, spec: StageSpec) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self.spec = spec
        setup_telemetry(spec.deployment.telemetry, f"tierflow-{spec.pool}")
        self.stopped_by_signal = False
        self.loop: StageLoop[Any] = build_loop(spec)
        self.thread: LoopThread[StageStats] = LoopThread(self.loop.run, name=f"stage-{spec.pool}")
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # Ctrl-C in a terminal reaches the whole process group; the driver owns it and stops
        # the replicas in order, so a replica must not die of it mid-batch.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        """Graceful stop from outside Ray (a SIGTERM to the replica's pid); no restart follows."""
        self.stopped_by_signal = True
        self._request_stop()

    def _request_stop(self) -> None:
        self.thread.call_soon(self.loop.request_stop)

    def run(self) -> dict[str, Any]:
        """Wait until the stage stops; returns its final counters (or raises what ended it)."""
        stats = self.thread.join()
        if self.stopped_by_signal or self.loop.over_memory:
            ray.actor.exit_actor()  # for good: the pipeline starts a fresh replica in its place
        return asdict(stats)

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        self._request_stop()

    @ray.method(concurrency_group="control")
    def rewind(self) -> None:
        """The broker lost its data: read the rebuilt topics from their beginning."""
        self.thread.call_soon(self.loop.request_broker_check)

    @ray.method(concurrency_group="control")
    def node_id(self) -> str:
        """The Ray node this replica runs on (placement checks, ``tierflow status``)."""
        return str(ray.get_runtime_context().get_node_id())

    @ray.method(concurrency_group="control")
    def stats(self) -> dict[str, Any]:
        """The loop's counters, plus the policy updates this replica ignored (forged, stale), by reason."""
        stats = asdict(self.loop.stats)
        feed = getattr(self.loop.handler, "feed", None)
        ignored = dict(feed.ignored) if isinstance(feed, PolicyFeed) else {}
        return {
            "pool": self.spec.pool,
            "replica": self.spec.replica,
            "pid": os.getpid(),
            **stats,
            "ignored_updates": ignored,
        }
