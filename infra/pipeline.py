"""Deploy a configured pipeline as Ray actor pools and take it down again.

The deployer also holds the controller's signing key: it reads the private key from the
variable ``[control] signing_key_env`` names (or makes an ephemeral pair when there is none),
hands it to the controller actor alone, and puts the public key into every replica's spec.

Every replica is a named actor (``<namespace>.<pool>.<n>``, see :func:`replica_name`).
Deployed ``detached`` (by the supervisor), the replicas outlive whoever created them, and
a deployer that starts again for the same namespace adopts the live ones by name instead
of starting a second set.
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
    template: StageSpec
    """What every replica of the pool runs (its replica number aside)."""
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


def replica_name(namespace: str, pool: str, replica: int) -> str:
    """The Ray actor name of one stage replica; unique per incarnation (a replacement takes a new number)."""
    return f"{namespace}.{pool}.{replica}"


def live_replicas(namespace: str, pool: str) -> list[int]:
    """Replica numbers of the named actors of ``pool`` alive in this Ray namespace, in order."""
    prefix = f"{namespace}.{pool}."
    numbers = []
    for name in ray.util.list_named_actors():
        tail = name[len(prefix) :] if name.startswith(prefix) else ""
        if tail.isdigit():
            numbers.append(int(tail))
    return sorted(numbers)


def with_signing_key(config: Config) -> tuple[Config, ControllerKey]:
    """The config listing the public key of the controller's signing key, and that key (:func:`controller_key`)."""
    key, public_keys, ephemeral = controller_key(config.control)
    if ephemeral:
        log.warning(
            "policy updates, replies and reports are signed with an ephemeral key; to verify them "
            'from another process add [control] public_keys = { %s = "%s" }, or set signing_key_env',
            key.key_id,
            key.public_key.hex(),
        )
    return replace(config, control=replace(config.control, public_keys=public_keys)), key


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
    """All stage pools of one config against one broker; ``stop()`` is safe twice.

    ``detached``: the replicas and the controller outlive this object's process (the
    supervisor's deployment), and ``start`` adopts the live ones of the namespace.
    ``signer`` and ``operator_keys``: the controller's private key (its public key already
    in ``config``, see :func:`with_signing_key`) and the operators' HMAC secrets, when they
    were read elsewhere (a supervisor runs where the operator's environment is not).
    """

    def __init__(
        self,
        config: Config,
        bootstrap: str,
        *,
        detached: bool = False,
        signer: ControllerKey | None = None,
        operator_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.detached = detached
        self.operator_keys = operator_keys
        self.pools: dict[str, Pool] = {}
        self.watchdog = BrokerWatchdog(
            kafka_options(config.broker, bootstrap), config.partitions(), config.broker.replication_factor
        )
        self._watching: asyncio.Task[None] | None = None
        self.controller: Any = None
        self._controller_run: Any = None
        self._numbered: dict[str, int] = {}
        """Per pool, the next replica number: a name is never reused, even for a replica still dying."""
        self._signer: ControllerKey | None = signer
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
        limits = deployment.replica_bounds()
        for kind, tier_name, configured, options in stages:
            spec = StageSpec(kind, deployment, tier_name)
            pool = Pool(spec.pool, spec, options=options)
            within = limits[pool.name]
            autoscaled = pool.name in deployment.autoscale
            replicas = min(max(configured, within.low), within.high) if autoscaled else configured
            self.pools[pool.name] = pool
            # A detached deployment adopts the replicas alive under its names (scaled or replaced ones
            # included), so a supervisor that starts again never runs a second set.
            numbers = live_replicas(c.namespace, pool.name) if self.detached else []
            for replica in numbers or range(replicas):
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
                pool.specs[i] = self._next_spec(pool)
                actor = self._create(pool, pool.specs[i])
                pool.actors[i], pool.runs[i] = actor, actor.run.remote()
                replaced.append(f"{pool.name}[{i}]")
        return replaced

    @property
    def signer(self) -> ControllerKey:
        """The key the controller signs with; the supervisor signs its pool reports with it too."""
        return self._signing_key()

    def _signing_key(self) -> ControllerKey:
        """The controller's key (see :func:`controller_key`); ``self.config`` then lists its public key."""
        if self._signer is None:
            self.config, self._signer = with_signing_key(self.config)
        return self._signer

    def _lifetime(self, name: str) -> dict[str, Any]:
        """Actor options for a named actor: detached ones are adopted when alive (``get_if_exists``)."""
        if self.detached:
            return {"name": name, "lifetime": "detached", "get_if_exists": True}
        return {"name": name}

    def _launch_controller(self) -> None:
        """The budget controller: one named actor per namespace, keys read from the environment unless given."""
        keys = self.operator_keys if self.operator_keys is not None else resolve_keys(self.config.control)
        self.controller = ControllerActor.options(  # type: ignore[attr-defined]
            **self._lifetime(controller_name(self.config.namespace)), num_cpus=self.config.router.num_cpus
        ).remote(self.config.runtime(self.bootstrap), keys, self._signing_key())
        self._controller_run = self.controller.run.remote()

    def _create(self, pool: Pool, spec: StageSpec) -> Any:
        name = replica_name(self.config.namespace, pool.name, spec.replica)
        return StageActor.options(**pool.options, **self._lifetime(name)).remote(spec)  # type: ignore[attr-defined]

    def _next_spec(self, pool: Pool) -> StageSpec:
        """A spec for a new replica of ``pool``, numbered after every replica it had (names are never reused)."""
        base = pool.template
        number = max([self._numbered.get(pool.name, 0), *(s.replica + 1 for s in pool.specs)])  # a pool at zero too
        self._numbered[pool.name] = number + 1
        return StageSpec(base.kind, base.deployment, base.tier, number)

    def _launch(self, pool: Pool, spec: StageSpec) -> None:
        actor = self._create(pool, spec)
        pool.actors.append(actor)
        pool.runs.append(actor.run.remote())

    def _pool_partitions(self, pool: Pool) -> set[tuple[str, int]]:
        deployment = pool.template.deployment
        topics = deployment.pool_topics()[pool.name]
        return {(topic, p) for topic in topics for p in range(deployment.partitions[topic])}

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until every pool's replicas together own all partitions of its topics."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_failed()
            missing = []
            for pool in self.pools.values():
                if not pool.actors:
                    continue  # asleep at zero (autoscaled): its records wait in Kafka until it wakes
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
            done, _ = ray.wait(pool.runs, num_returns=len(pool.runs), timeout=0) if pool.runs else ([], [])
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
            spec = self._next_spec(pool)
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
