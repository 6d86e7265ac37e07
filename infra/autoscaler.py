"""The supervisor's pool keeper: observe every pool, size the autoscaled ones, say what it did.

Once a second (every :data:`FIXED_INTERVAL_S` when no pool is autoscaled) it reads, per pool,
the lag and the records produced to its topics (from Kafka, as ``tierflow status`` does:
:meth:`~infra.status.reader.StatusReader.pool_offsets`) and its replicas' counters (records of
finished batches and the seconds spent on them, so the service rate of one replica is
measured, not configured). The law (:func:`policies.autoscale.decide`) turns that into a
replica count; the pipeline applies it (``Pipeline.scale``: new replicas join the group, removed ones finish
their batch, commit and leave, so no record is lost or answered twice).

Every decision is published at once as a signed :class:`~topics.control.PoolReport` on the
control topic naming the pools it resized, with the inputs and the reason per pool; the same
report goes out every :data:`REPORT_EVERY_S` while anything moves and every
:data:`QUIET_REPORT_EVERY_S` otherwise. ``tierflow status`` shows the newest one, and the
counts are exported as the ``tierflow.pool.replicas`` and ``tierflow.pool.desired`` gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from infra.pipeline import Pipeline, Pool
from infra.status.reader import PoolOffsets, StatusReader
from policies.autoscale import Observation, PoolScale, decide
from topics.control import ControllerKey, PoolReport, PoolStatus
from topics.errors import TierflowError
from workers.telemetry import record_pool_state

log = logging.getLogger("tierflow.autoscaler")
INTERVAL_S = 1.0
FIXED_INTERVAL_S = 5.0
"""How often pools are looked at when none is autoscaled (only for the report and the gauges)."""
REPORT_EVERY_S = 5.0
QUIET_REPORT_EVERY_S = 60.0
SERVICE_SMOOTHING = 0.3
"""Weight of the newest interval in the service rate's moving average."""
MIN_BUSY_S = 0.05
"""Less work than this in an interval says too little about the service rate to count."""


@dataclass(frozen=True, slots=True)
class _Counters:
    """One replica's work so far."""

    served: int
    busy_s: float


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    produced: int
    replicas: Mapping[int, _Counters]
    """By replica number: a replica added or removed between two samples is left out of the rate."""


def service_rate(before: Mapping[int, _Counters], after: Mapping[int, _Counters]) -> float | None:
    """Records per second of work over the replicas present in both samples (None: too little work)."""
    served = busy = 0.0
    for replica, now in after.items():
        if (then := before.get(replica)) is not None:
            served += now.served - then.served
            busy += now.busy_s - then.busy_s
    return served / busy if busy >= MIN_BUSY_S else None


class Autoscaler:
    """Keeps one pipeline's pools sized and reported; ``start()`` after the pipeline started."""

    def __init__(
        self,
        pipeline: Pipeline,
        signer: ControllerKey | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.signer = signer
        self.clock = clock
        spec = pipeline.config.runtime(pipeline.bootstrap)
        self.scaling = spec.autoscale
        self.limits = spec.replica_bounds()
        self.kafka = spec.control_connection().options()
        self.control_topic = spec.layout.control
        self.states: dict[str, PoolScale] = {}
        self.status: dict[str, PoolStatus] = {}
        self._samples: dict[str, _Sample] = {}
        self._service: dict[str, float] = {}
        self._reader: StatusReader | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ordered: set[str] = set()
        """Pools an operator resized since the last tick: the next report names them."""
        self._last_report = 0.0
        self._moving = True

    @property
    def interval_s(self) -> float:
        return INTERVAL_S if self.scaling else FIXED_INTERVAL_S

    async def start(self) -> None:
        now = self.clock()
        self.states = {name: PoolScale(len(pool.actors), changed_at=now) for name, pool in self.pipeline.pools.items()}
        self._reader = StatusReader(self.kafka, self.pipeline.config)
        await self._reader.start()
        if self.signer is not None:
            self._producer = AIOKafkaProducer(**self.kafka, acks="all", linger_ms=1)
            await self._producer.start()

    async def stop(self) -> None:
        reader, producer = self._reader, self._producer
        self._reader = self._producer = None
        if reader is not None:
            await reader.stop()
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()

    async def run(self) -> None:
        """Tick until cancelled; a failed look at the broker is logged and tried again next tick."""
        while True:
            try:
                await self.tick()
            except (TierflowError, KafkaError) as exc:
                log.warning("autoscaler: looking at the pools failed, again in %.0f s: %s", self.interval_s, exc)
            except Exception:  # the pools must stay watched whatever one tick hit
                log.exception("autoscaler: a tick failed; again in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> list[str]:
        """Observe every pool, resize the autoscaled ones, publish; returns the pools resized."""
        assert self._reader is not None, "start() first"
        now = self.clock()
        offsets = await self._reader.pool_offsets()
        stats = await self.pipeline.stats()
        changed, self._ordered = sorted(self._ordered), set()
        for name, pool in self.pipeline.pools.items():
            if name not in offsets:
                continue
            seen = self._observe(name, offsets[name], stats.get(name, []), now)
            state = self.states.get(name, PoolScale(len(pool.actors), changed_at=now))
            if (scaling := self.scaling.get(name)) is not None:
                state = decide(scaling, state, seen)
            self.states[name] = state
            if state.desired != len(pool.actors):
                log.info("autoscaler: %s %d -> %d (%s)", name, len(pool.actors), state.desired, state.reason)
                await self.pipeline.scale(name, state.desired)
                changed.append(name)
            self.status[name] = self._pool_status(name, pool, seen, stats.get(name, []))
        self._moving = bool(changed) or any(s.lag or s.arrival_rate for s in self.status.values())
        record_pool_state({name: (s.running, s.desired) for name, s in self.status.items()})
        due = REPORT_EVERY_S if self._moving else QUIET_REPORT_EVERY_S
        if changed or now - self._last_report >= due:
            await self.publish(tuple(changed), now)
        return changed

    async def order(self, pool: str, replicas: int, reason: str) -> None:
        """An operator's accepted ``tierflow scale``: the pool runs ``replicas`` now; an autoscaled pool's
        law goes on from there (within its bounds, which the controller checked)."""
        found = self.pipeline.pools.get(pool)
        if found is None:
            return
        self.states[pool] = PoolScale(replicas, reason=reason, changed_at=self.clock())
        if len(found.actors) != replicas:
            log.info("supervisor: %s from %d to %d replicas (%s)", pool, len(found.actors), replicas, reason)
            await self.pipeline.scale(pool, replicas)
            self._ordered.add(pool)

    def _observe(self, name: str, offsets: PoolOffsets, stats: list[dict[str, Any]], now: float) -> Observation:
        counters = {int(s["replica"]): _Counters(int(s.get("served", 0)), float(s.get("busy_s", 0.0))) for s in stats}
        sample, before = _Sample(now, offsets.produced, counters), self._samples.get(name)
        self._samples[name] = sample
        arrival = 0.0
        if before is not None and now > before.at:
            arrival = max(0.0, (sample.produced - before.produced) / (now - before.at))
            measured = service_rate(before.replicas, counters)
            if measured is not None:
                old = self._service.get(name)
                self._service[name] = measured if old is None else old + SERVICE_SMOOTHING * (measured - old)
        return Observation(now, offsets.lag, arrival, self._service.get(name, 0.0), offsets.partitions)

    def _pool_status(self, name: str, pool: Pool, seen: Observation, stats: list[dict[str, Any]]) -> PoolStatus:
        state, bounds = self.states[name], self.limits[name]
        done, _ = ray.wait(pool.runs, num_returns=len(pool.runs), timeout=0) if pool.runs else ([], [])
        return PoolStatus(
            pool=name,
            desired=state.desired,
            running=len(pool.runs) - len(done),
            ready=sum(1 for s in stats if s.get("assigned")),
            low=bounds.low,
            high=bounds.high,
            autoscaled=name in self.scaling,
            lag=seen.lag,
            arrival_rate=round(seen.arrival_rate, 3),
            service_rate=round(seen.service_rate, 3),
            reason=state.reason,
            changed_at=state.changed_at,
        )

    async def publish(self, changed: tuple[str, ...], now: float) -> None:
        """The signed pool report (nothing without the controller's key: no one could trust it)."""
        self._last_report = now
        if self._producer is None or self.signer is None or not self.status:
            return
        report = PoolReport(pools=tuple(self.status.values()), at=now, changed=changed)
        value = self.signer.sign(report, self.pipeline.config.namespace).to_wire()
        try:
            await self._producer.send_and_wait(self.control_topic, value, key=b"supervisor")
        except KafkaError as exc:  # the next report says the same; a decision stays visible in the pools
            log.warning("autoscaler: publishing the pool report failed: %r", exc)
