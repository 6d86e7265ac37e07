"""The tracer and meter providers this process reports to, and the name prefix of everything reported.

A leaf of the package on purpose: spans (``propagation``), the stage loop's metrics (``stage``)
and the setup that installs the providers (``setup``) all read them, and setup in turn builds
the stage's and controller's instruments, so the holder has to sit below all three.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

SCOPE = "tierflow"
"""Instrumentation scope of every tracer and meter tierflow asks for."""
PREFIX = f"{SCOPE}."
"""Every span and metric name starts with this."""
FLUSH_TIMEOUT_MS = 5000
"""Bound on a flush at the end of a stage: an unreachable OTLP collector must not hold a replica's exit."""


@dataclass
class Installed:
    """What ``setup.install_providers`` installed; ``None`` throughout means the passthrough path."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    tracer: Tracer | None = None


installed = Installed()
"""Written only by :mod:`workers.telemetry.setup` (under its lock); read anywhere."""
_api_tracer = trace.get_tracer(SCOPE)


def tracer() -> Tracer:
    """The installed SDK tracer, else the API's (non-recording unless a global provider is set)."""
    return installed.tracer or _api_tracer


def flush_telemetry(timeout_ms: int = FLUSH_TIMEOUT_MS) -> None:
    """Export what is buffered now: a stage calls it when its run ends, before Ray may kill the process."""
    if installed.tracer_provider is not None:
        installed.tracer_provider.force_flush(timeout_ms)
    if installed.meter_provider is not None:
        installed.meter_provider.force_flush(timeout_ms)
