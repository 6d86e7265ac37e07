"""The budget controller's state as gauges: ``tierflow.controller.lambda``, ``.mu``, ``.threshold``
and ``.policy_version``.

The controller only hands over its latest values (:func:`record_controller_state`, cheap enough
for every step); the exporter thread reads them at each export. Nothing is reported before the
first call, so a process that runs no controller exports no controller gauges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from workers.telemetry.providers import PREFIX


@dataclass(frozen=True)
class _Snapshot:
    lam: float
    mu: float
    thresholds: dict[str, float]
    version: int


@dataclass
class _Latest:
    """Replaced whole by the controller, read by the exporter thread."""

    snapshot: _Snapshot | None = None


_latest = _Latest()


def record_controller_state(lam: float, mu: float, thresholds: dict[str, float], version: int) -> None:
    """The controller's current λ, μ, per-tier thresholds and policy version, read by the gauges
    ``tierflow.controller.*`` at every export (cheap: it only keeps the latest values)."""
    _latest.snapshot = _Snapshot(float(lam), float(mu), {k: float(v) for k, v in thresholds.items()}, int(version))


def forget_controller_state() -> None:
    """Back to reporting nothing (when the providers are uninstalled)."""
    _latest.snapshot = None


def register_controller_gauges(meter: Meter) -> None:
    """Create the ``tierflow.controller.*`` gauges on ``meter``; attribute: ``tier`` (thresholds only)."""
    meter.create_observable_gauge(f"{PREFIX}controller.lambda", [_observe("lam")], "1", "Controller λ")
    meter.create_observable_gauge(f"{PREFIX}controller.mu", [_observe("mu")], "1", "Controller μ")
    meter.create_observable_gauge(
        f"{PREFIX}controller.threshold", [_observe_thresholds], "1", "Acceptance threshold per tier"
    )
    meter.create_observable_gauge(
        f"{PREFIX}controller.policy_version", [_observe("version")], "1", "Policy version in force"
    )


def _observe(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        snapshot = _latest.snapshot
        return [] if snapshot is None else [Observation(getattr(snapshot, name))]

    return observe


def _observe_thresholds(options: CallbackOptions) -> Iterable[Observation]:
    snapshot = _latest.snapshot
    if snapshot is None:
        return []
    return [Observation(value, {"tier": tier}) for tier, value in snapshot.thresholds.items()]
