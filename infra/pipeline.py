"""Deploy a configured pipeline as Ray actor pools and take it down again.

The deployer also holds the controller's signing key: it reads the private key from the
variable ``[control] signing_key_env`` names (or makes an ephemeral pair when there is none),
hands it to the controller actor alone, and puts the public key into every replica's spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayError

from infra.broker import kafka_options
from infra.config import Config
from infra.watchdog import BrokerWatchdog
from topics.admin import ensure_topics
from topics.control import ControllerKey, parse_key_hex
from topics.errors import ConfigError, TierflowError
from workers.actors import StageActor, StageSpec
from workers.controller_actor import ControllerActor, controller_name, resolve_keys
from workers.spec import ControlConfig

log = logging.getLogger("tierflow.pipeline")


class PipelineError(TierflowError):
    """A stage pool could not start or failed."""


@dataclass
class Pool:
    """The replicas of one stage (router, verifier, sink or one tier's workers)."""

    name: str
    specs: list[StageSpec] = field(default_factory=list)
    actors: list[Any] = field(default_factory=list)
    runs: list[Any] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def controller_key(
    control: ControlConfig, environ: Mapping[str, str] = os.environ
) -> tuple[ControllerKey, dict[str, str], bool]:
    """The key the controller signs with, the public keys the replicas will trust, and whether it is ephemeral.

    With a private key in the variable ``signing_key_env`` names, its key id is the ``public_keys``
    entry holding its public key (none: a one-line error naming the entry to add), and the trusted
    keys are the configured ones. Without one (unset, or the variable empty) a fresh pair is made for
    this deployment and its public key joins the configured ones: the demo and tests need no setup.
    """
    env = control.signing_key_env
    text = environ.get(env, "").strip() if env else ""
    public_keys = dict(control.public_keys)
    if not text:
        key = ControllerKey.generate()
        return key, {**public_keys, key.key_id: key.public_key.hex()}, True
    seed = parse_key_hex(text, f"the controller's private key in ${env}")
    public = ControllerKey("-", seed).public_key.hex()
    for key_id, listed in public_keys.items():
        if listed.strip().lower() == public:
            return ControllerKey(key_id, seed), public_keys, False
    raise ConfigError(f'the private key in ${env} matches no [control] public_keys entry: add <id> = "{public}"')


def _left_gracefully(run: Any) -> bool:
    """Whether a finished ``run`` ended with the replica's own graceful exit (``exit_actor`` after SIGTERM)."""
    try:
        ray.get(run, timeout=0)
    except ActorDiedError as exc:
        return "INTENDED" in str(exc) or "exit_actor" in str(exc)
    except RayError:
        return False
    return True


class Pipeline:
    """All stage pools of one config against one broker; ``stop()`` is safe twice."""

    def __init__(self, config: Config, bootstrap: str) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.pools: dict[str, Pool] = {}
        self.watchdog = BrokerWatchdog(
            kafka_options(config.broker, bootstrap), config.partitions(), config.broker.replication_factor
        )
        self._watching: asyncio.Task[None] | None = None
        self.controller: Any = None
        self._controller_run: Any = None
        self._signer: ControllerKey | None = None
        """The controller's private key, made or read once per Pipeline: a restart keeps signing with it."""

    def _plan(self) -> None:
        c = self.config
        deployment = c.runtime(self.bootstrap)
        stages: list[tuple[str, str, int, dict[str, Any]]] = [
            ("router", "", c.router.replicas, {"num_cpus": c.router.num_cpus}),
            ("verifier", "", c.verifier.replicas, {"num_cpus": c.verifier.num_cpus}),
        ]
        for tier in c.tiers:
            options = {"num_cpus": tier.num_cpus, "num_gpus": tier.num_gpus, "resources": dict(tier.resources)}
            stages.append(("worker", tier.name, tier.replicas, options))
        if c.results_path:
            stages.append(("sink", "", c.sink.replicas, {"num_cpus": c.sink.num_cpus}))
        for kind, tier_name, replicas, options in stages:
            spec = StageSpec(kind, deployment, tier_name)
            pool = Pool(spec.pool, options=options)
            self.pools[pool.name] = pool
            for replica in range(replicas):
                pool.specs.append(StageSpec(kind, deployment, tier_name, replica))

    async def start(self, ready_timeout_s: float = 120.0) -> None:
        """Create topics, start every replica, and wait until each pool owns all its partitions."""
        if self.config.control.enabled:
            self._signing_key()  # first: a bad key fails before the broker is touched; every spec carries it
        await ensure_topics(
            kafka_options(self.config.broker, self.bootstrap),
            self.config.partitions(),
            self.config.broker.replication_factor,
        )
        await self.watchdog.check()  # learns the broker's cluster id before anything can be lost
        self._plan()
        if self.config.control.enabled:
            self._launch_controller()
        for pool in self.pools.values():
            for spec in pool.specs:
                self._launch(pool, spec)
        await self.wait_ready(ready_timeout_s)
        self._watching = asyncio.create_task(self._watch())

    async def _watch(self, interval_s: float = 1.0) -> None:
        """Rebuild the topics whenever the broker turns out to have lost them; replace replicas that left."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                lost = await self.watchdog.check()
            except Exception:  # the watch must outlive any one failed look at the broker
                log.exception("broker watchdog: check failed; looking again in %.0f s", interval_s)
                continue
            if lost:
                for pool in self.pools.values():
                    for actor in pool.actors:
                        actor.rewind.remote()
            self.replace_departed()

    def replace_departed(self) -> list[str]:
        """Start a new replica in the place of each one that stopped gracefully without our asking.

        A SIGTERM (a node drained, a pod evicted) stops a replica for good: it finishes its
        batch, commits and leaves, and Ray does not restart it. Without a replacement the
        pool would shrink for the rest of the run, and to nothing after as many SIGTERMs as
        it has replicas. A replica that failed (its run raised after Ray's restarts) is left
        for its error to surface, not restarted in a loop. Returns the replaced replicas.
        """
        replaced = []
        for pool in self.pools.values():
            done, _ = ray.wait(pool.runs, num_returns=len(pool.runs), timeout=0) if pool.runs else ([], [])
            for ref in done:
                if not _left_gracefully(ref):
                    continue
                i = pool.runs.index(ref)
                ray.kill(pool.actors[i], no_restart=True)
                actor = StageActor.options(**pool.options).remote(pool.specs[i])  # type: ignore[attr-defined]
                pool.actors[i], pool.runs[i] = actor, actor.run.remote()
                replaced.append(f"{pool.name}[{i}]")
        return replaced

    def _signing_key(self) -> ControllerKey:
        """The controller's key (see :func:`controller_key`); ``self.config`` then lists its public key."""
        if self._signer is None:
            key, public_keys, ephemeral = controller_key(self.config.control)
            self.config = replace(self.config, control=replace(self.config.control, public_keys=public_keys))
            self._signer = key
            if ephemeral:
                log.warning(
                    "policy updates, replies and reports are signed with an ephemeral key; to verify them "
                    'from another process add [control] public_keys = { %s = "%s" }, or set signing_key_env',
                    key.key_id,
                    key.public_key.hex(),
                )
        return self._signer

    def _launch_controller(self) -> None:
        """The budget controller: one named actor per namespace, keys read here from the environment."""
        self.controller = ControllerActor.options(  # type: ignore[attr-defined]
            name=controller_name(self.config.namespace), num_cpus=self.config.router.num_cpus
        ).remote(self.config.runtime(self.bootstrap), resolve_keys(self.config.control), self._signing_key())
        self._controller_run = self.controller.run.remote()

    def _launch(self, pool: Pool, spec: StageSpec) -> None:
        actor = StageActor.options(**pool.options).remote(spec)  # type: ignore[attr-defined]
        pool.actors.append(actor)
        pool.runs.append(actor.run.remote())

    def _pool_partitions(self, pool: Pool) -> set[tuple[str, int]]:
        counts = self.config.partitions()
        layout = self.config.layout
        spec = pool.specs[0]
        topics = {
            "router": [layout.requests],
            "verifier": [layout.answers],
            "sink": [layout.results],
            "worker": [layout.tier(spec.tier), layout.escalate(spec.tier)] if spec.tier else [],
        }[spec.kind]
        return {(topic, p) for topic in topics for p in range(counts[topic])}

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until every pool's replicas together own all partitions of its topics."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_failed()
            missing = []
            for pool in self.pools.values():
                stats = await self.pool_stats(pool)
                owned = {tuple(tp) for s in stats for tp in s.get("assigned", [])}
                if not self._pool_partitions(pool) <= owned:
                    missing.append(pool.name)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise PipelineError(f"pools not ready after {timeout_s:.0f}s: {', '.join(missing)}")
            await asyncio.sleep(0.25)

    def _raise_if_failed(self) -> None:
        """Surface a replica whose ``run`` ended with an error (e.g. a backend that cannot load)."""
        for pool in self.pools.values():
            done, _ = ray.wait(pool.runs, num_returns=len(pool.runs), timeout=0)
            for ref in done:
                try:
                    ray.get(ref)
                except RayError as exc:
                    cause = getattr(exc, "cause", None) or exc
                    raise PipelineError(f"{pool.name} failed: {str(cause).strip().splitlines()[-1]}") from exc

    async def pool_stats(self, pool: Pool) -> list[dict[str, Any]]:
        stats = []
        for actor in pool.actors:
            with contextlib.suppress(RayError, asyncio.TimeoutError):
                stats.append(await asyncio.wait_for(actor.stats.remote(), timeout=5))
        return stats

    async def stats(self) -> dict[str, list[dict[str, Any]]]:
        return {name: await self.pool_stats(pool) for name, pool in self.pools.items()}

    async def scale(self, pool_name: str, replicas: int) -> None:
        """Add or remove replicas of a pool at run time (the group rebalances)."""
        pool = self.pools[pool_name]
        while len(pool.actors) < replicas:
            base = pool.specs[0]
            spec = StageSpec(base.kind, base.deployment, base.tier, max(s.replica for s in pool.specs) + 1)
            pool.specs.append(spec)
            self._launch(pool, spec)
        while len(pool.actors) > replicas:
            # Remove a replica that already stopped, if any, rather than a working one.
            done, _ = ray.wait(pool.runs, num_returns=len(pool.runs), timeout=0)
            i = pool.runs.index(done[-1]) if done else len(pool.runs) - 1
            actor, run = pool.actors.pop(i), pool.runs.pop(i)
            pool.specs.pop(i)
            await self._stop_actor(actor, run, timeout_s=30)

    async def _stop_actor(self, actor: Any, run: Any, timeout_s: float) -> None:
        """Ask, wait at most ``timeout_s`` for the batch in flight, then kill: every wait here is bounded,
        so a replica that hangs cannot keep ``stop()`` (and the demo) from returning."""
        with contextlib.suppress(RayError, asyncio.TimeoutError):
            await asyncio.wait_for(actor.stop.remote(), timeout=timeout_s)
        with contextlib.suppress(RayError, asyncio.TimeoutError):
            await asyncio.wait_for(run, timeout=timeout_s)
        with contextlib.suppress(RayError):
            ray.kill(actor, no_restart=True)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop of every replica (finish, commit, leave group), then kill leftovers."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        pools, self.pools = list(self.pools.values()), {}
        await asyncio.gather(
            *(self._stop_actor(a, r, timeout_s) for pool in pools for a, r in zip(pool.actors, pool.runs, strict=True))
        )
        if self.controller is not None:
            controller, self.controller = self.controller, None
            await self._stop_actor(controller, self._controller_run, timeout_s)
