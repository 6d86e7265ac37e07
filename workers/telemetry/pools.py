"""The supervisor's pools as gauges: ``tierflow.pool.replicas`` (running) and ``tierflow.pool.desired``,
attribute ``pool``.

As with the controller's gauges, the supervisor only hands over its latest counts
(:func:`record_pool_state`) and the exporter thread reads them; a process that supervises
nothing exports no pool gauges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from workers.telemetry.providers import PREFIX


@dataclass
class _Latest:
    """Replaced whole by the supervisor, read by the exporter thread: pool -> (running, desired)."""

    counts: Mapping[str, tuple[int, int]] = field(default_factory=dict)


_latest = _Latest()


def record_pool_state(counts: Mapping[str, tuple[int, int]]) -> None:
    """Each pool's running and desired replicas, read by the ``tierflow.pool.*`` gauges at every export."""
    _latest.counts = dict(counts)


def forget_pool_state() -> None:
    _latest.counts = {}


def register_pool_gauges(meter: Meter) -> None:
    meter.create_observable_gauge(f"{PREFIX}pool.replicas", [_observe(0)], "1", "Replicas running per pool")
    meter.create_observable_gauge(f"{PREFIX}pool.desired", [_observe(1)], "1", "Replicas the pool should run")


def _observe(index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(counts[index], {"pool": pool}) for pool, counts in _latest.counts.items()]

    return observe
