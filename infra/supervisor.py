"""The supervisor: one detached, named Ray actor per namespace that owns the deployment.

``tierflow up`` used to hold the pools itself: every replica was owned by the ``up``
process, so killing it took the pipeline down. The supervisor takes that role, the way
Ray Serve's controller does: a detached actor named ``<namespace>.supervisor`` that
deploys every pool and the budget controller as detached, named actors, runs the
broker watchdog, and replaces replicas that left. ``up`` starts it or attaches to the
one already running and only follows it, so the driver can die and nothing stops.
Ray restarts a supervisor that died (``max_restarts``) with the arguments it was
created with; the restarted one adopts the live replicas by name
(:func:`~infra.pipeline.live_replicas`) instead of starting a second set.

It needs a Ray that outlives the driver (``[ray] address``): a local Ray started by
``up`` dies with it, supervisor and all.

The autoscaler (:mod:`infra.autoscaler`) runs in the same loop: it looks at every pool once a
second, sizes the autoscaled ones and publishes what it found and did as signed pool reports
on the control topic (``tierflow status`` shows them).

Scaling from outside is a signed ``scale_pool`` command on the control topic (``tierflow
scale``): the budget controller checks it like every command (HMAC, sequence, expiry; the
pool exists; the count within the pool's bounds and its topics' partitions) and answers it; the
supervisor applies each command the controller accepted (:class:`ScaleOrders`). It reads
the control topic from its beginning when it starts, so the last accepted size of each
fixed pool holds across a restart of the supervisor (or of the whole deployment on a broker
that kept the topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import ray
from aiokafka.errors import KafkaError
from ray.exceptions import RayError

from infra.autoscaler import Autoscaler
from infra.config import Config
from infra.pipeline import Pipeline, with_signing_key
from topics.control import (
    CommandAction,
    ControlCommand,
    ControllerKey,
    ControlRecord,
    ControlReply,
    TrustedKeys,
    decode_control,
    verify_record,
)
from topics.errors import DecodeError, TierflowError
from topics.reader import Record, TopicReader
from workers.controller_actor import resolve_keys
from workers.loop_thread import LoopThread
from workers.policy_feed import trusted_keys

log = logging.getLogger("tierflow.supervisor")
HEAD_NODE = "node:__internal_head__"
"""A resource only Ray's head node has: the supervisor lives there, as Ray Serve's controller does, so losing
a worker node never takes it (and its view of the pools) away while the replicas it must re-place move."""
CALL_TIMEOUT_S = 30.0
"""Bound on a question to the supervisor's loop (its stats ask every replica, 5 s each at most)."""


def supervisor_name(namespace: str) -> str:
    """The Ray actor name of a namespace's supervisor."""
    return f"{namespace}.supervisor"


def config_digest(config: Config) -> str:
    """A short fingerprint of a config: an ``up`` that attaches says when it is not the running one's."""
    return hashlib.sha256(repr(config).encode()).hexdigest()[:12]


class SupervisorError(TierflowError):
    """The supervisor could not deploy the pipeline, or is not there."""


@dataclass
class ScaleOrders:
    """Turns the control topic into scale orders: a ``scale_pool`` command counts once the controller's
    signed, accepted reply to it follows (an unsigned or forged reply orders nothing)."""

    trusted: TrustedKeys
    _pending: dict[int, ControlCommand] = field(default_factory=dict)

    def feed(self, offset: int, record: ControlRecord | DecodeError) -> tuple[str, int] | None:
        """The (pool, replicas) ``record`` orders, if any."""
        if isinstance(record, ControlCommand) and record.action is CommandAction.SCALE_POOL:
            self._pending[offset] = record
        elif isinstance(record, ControlReply) and verify_record(record, self.trusted) is None:
            command = self._pending.pop(record.offset, None)
            if record.accepted and command is not None and (command.key_id, command.seq) == (record.key_id, record.seq):
                return command.pool, command.replicas
        return None


@ray.remote(max_restarts=-1, max_task_retries=-1, concurrency_groups={"control": 4})  # type: ignore[call-overload]  # stubs lack concurrency_groups
class SupervisorActor:
    """Deploys and watches one namespace's pipeline from its own thread (see :mod:`workers.loop_thread`)."""

    def __init__(
        self,
        config: Config,
        bootstrap: str,
        signer: ControllerKey | None,
        operator_keys: Mapping[str, bytes],
        digest: str,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        with contextlib.suppress(ValueError):  # Ray may construct it off the main thread: no handler there
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.pipeline = Pipeline(config, bootstrap, detached=True, signer=signer, operator_keys=operator_keys)
        self.digest = digest
        self.started_at = time.time()
        self.ready = False
        self.error = ""
        self._stopping: asyncio.Event | None = None
        self.autoscaler: Autoscaler | None = None
        self.thread: LoopThread[None] = LoopThread(self._main, name="supervisor")

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.pipeline.start()
            self.ready = True
            log.info("supervisor of %s: every pool is ready", self.pipeline.config.namespace)
            signer = self.pipeline.signer if self.pipeline.config.control.enabled else None
            self.autoscaler = Autoscaler(self.pipeline, signer)
            await self.autoscaler.start()
            tasks.append(asyncio.create_task(self.autoscaler.run()))
            if signer is not None:
                tasks.append(asyncio.create_task(self._follow_scale_orders()))
            await self._stopping.wait()
        except (TierflowError, KafkaError) as exc:
            self.error = str(exc)
            log.error("supervisor of %s: %s", self.pipeline.config.namespace, exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.autoscaler is not None:
                await self.autoscaler.stop()
            await self.pipeline.stop()

    async def _follow_scale_orders(self) -> None:
        """Apply the last accepted size of each pool the control topic holds, then every new order;
        a broker that fails the reader is looked at again (sizes already applied are no-ops)."""
        while True:
            try:
                await self._read_scale_orders()
            except (TierflowError, KafkaError) as exc:
                log.warning("supervisor: reading scale orders failed, again in 1 s: %r", exc)
                await asyncio.sleep(1.0)

    async def _read_scale_orders(self) -> None:
        pipeline = self.pipeline
        spec = pipeline.config.runtime(pipeline.bootstrap)
        orders = ScaleOrders(trusted_keys(spec))
        topic = spec.layout.control
        reader = TopicReader(spec.control_connection().options(), [topic], partitions={topic: 1})
        await reader.start()
        try:
            latest: dict[str, int] = {}
            async for batch in reader.read_to_end():
                for record in batch:
                    if (order := orders.feed(record.offset, _decode(record))) is not None:
                        latest[order[0]] = order[1]
            autoscaled = pipeline.config.autoscaling()
            for pool, replicas in latest.items():
                if pool not in autoscaled:  # an autoscaled pool goes on from the replicas alive now
                    await self._scale(pool, replicas)

            async def on_record(record: Record) -> None:
                if (order := orders.feed(record.offset, _decode(record))) is not None:
                    await self._scale(*order)

            await reader.follow(on_record)
        finally:
            await reader.stop()

    async def _scale(self, pool: str, replicas: int) -> None:
        assert self.autoscaler is not None  # started before the orders are read
        await self.autoscaler.order(pool, replicas, f"ordered: tierflow scale {pool} {replicas}")

    @ray.method(concurrency_group="control")
    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Block until every pool is ready, the deployment failed, or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while not (self.ready or self.error or self.thread.done) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self._describe()

    @ray.method(concurrency_group="control")
    def describe(self) -> dict[str, Any]:
        """Namespace, broker, state, replicas per pool (and each pool's newest status, as its report has it),
        and the config fingerprint it was started from."""
        return self._describe()

    def _describe(self) -> dict[str, Any]:
        state = "failed" if self.error else "ready" if self.ready else "stopped" if self.thread.done else "starting"
        return {
            "namespace": self.pipeline.config.namespace,
            "bootstrap": self.pipeline.bootstrap,
            "state": state,
            "replicas": {name: len(pool.actors) for name, pool in self.pipeline.pools.items()},
            "pools": {name: msgspec.structs.asdict(p) for name, p in list(self.autoscaler.status.items())}
            if self.autoscaler is not None
            else {},
            "error": self.error,
            "digest": self.digest,
            "started_at": self.started_at,
        }

    @ray.method(concurrency_group="control")
    def stats(self) -> dict[str, list[dict[str, Any]]]:
        """Every replica's counters, by pool (empty while it is not running)."""
        with contextlib.suppress(RuntimeError, TimeoutError):
            return self.thread.run_coroutine(self.pipeline.stats(), CALL_TIMEOUT_S)
        return {}

    @ray.method(concurrency_group="control")
    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stop every replica gracefully (finish the batch, commit, leave) and the controller; then this loop."""
        self.thread.call_soon(self._request_stop)
        with contextlib.suppress(Exception):  # an error is in describe(); the stop itself happened
            self.thread.join(timeout_s)
        return self._describe()

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()


def _decode(record: Record) -> ControlRecord | DecodeError:
    try:
        return decode_control(record.value or b"")
    except DecodeError as exc:
        return exc


def find_supervisor(namespace: str) -> Any | None:
    """The running supervisor of ``namespace`` in this Ray namespace, or None."""
    try:
        return ray.get_actor(supervisor_name(namespace))
    except ValueError:
        return None


def start_supervisor(config: Config, bootstrap: str) -> tuple[Any, bool]:
    """Attach to the supervisor of ``config.namespace``, or start one; returns it and whether it is new.

    The controller's key and the operators' HMAC secrets are read here, where the operator's
    environment is, and handed over (Ray keeps constructor arguments, so a restarted
    supervisor, and the controller it restarts, sign with the same key).
    """
    if (existing := find_supervisor(config.namespace)) is not None:
        return existing, False
    digest = config_digest(config)
    signer = None
    if config.control.enabled:
        config, signer = with_signing_key(config)
    handle = SupervisorActor.options(  # type: ignore[attr-defined]
        name=supervisor_name(config.namespace),
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        resources={HEAD_NODE: 0.001},
    ).remote(config, bootstrap, signer, resolve_keys(config.control), digest)
    return handle, True


def await_ready(handle: Any, timeout_s: float) -> dict[str, Any]:
    """The supervisor's state once its pools are ready; raises SupervisorError when it failed or took too long."""
    try:
        state: dict[str, Any] = ray.get(handle.wait_ready.remote(timeout_s), timeout=timeout_s + CALL_TIMEOUT_S)
    except RayError as exc:
        raise SupervisorError(f"the supervisor failed: {_last_line(exc)}") from exc
    if state["state"] == "ready":
        return state
    if state["error"]:
        raise SupervisorError(state["error"])
    raise SupervisorError(f"the pipeline of {state['namespace']} is {state['state']} after {timeout_s:.0f} s")


def stop_supervisor(handle: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """Stop the deployment gracefully, then the supervisor itself (for good: Ray does not restart it)."""
    state: dict[str, Any] = {}
    try:
        state = ray.get(handle.stop.remote(timeout_s), timeout=timeout_s + CALL_TIMEOUT_S)
    except RayError as exc:  # it died meanwhile: nothing left to stop gracefully
        state = {"error": f"the supervisor failed: {_last_line(exc)}"}
    finally:
        with contextlib.suppress(RayError, ValueError):
            ray.kill(handle, no_restart=True)
    return state


def _last_line(exc: BaseException) -> str:
    """The last line of a Ray error (the remote exception's own message), without Ray's frame dump."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
