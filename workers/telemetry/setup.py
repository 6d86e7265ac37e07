"""Installing the OpenTelemetry SDK: exporters, providers, and the console JSON-lines writer.

:func:`setup_telemetry` installs what a ``[telemetry]`` table asks for, once per process
(``none`` installs nothing: spans stay the zero-cost passthrough and every metric call
returns at its first line). Installing a meter provider also creates the stage loop's and
the controller's instruments on it, which is why this module sits above the others.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from topics.errors import ConfigError
from workers.telemetry.controller import forget_controller_state, register_controller_gauges
from workers.telemetry.pools import forget_pool_state, register_pool_gauges
from workers.telemetry.providers import FLUSH_TIMEOUT_MS, SCOPE, installed
from workers.telemetry.stage import install_stage_instruments

if TYPE_CHECKING:
    from workers.spec import TelemetryConfig


class _AppendLines:
    """A JSON-lines file that several processes share (every replica of a pipeline may get the same
    ``console_path``): each line is one ``os.write`` on an ``O_APPEND`` descriptor, which the kernel
    appends whole, so lines from different replicas and exporter threads never interleave."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, text: str) -> int:
        data = memoryview(text.encode())
        while data:  # a regular file writes short only on a full disk; then the rest follows
            data = data[os.write(self.fd, data) :]
        return len(text)

    def flush(self) -> None:
        """Nothing buffered: ``write`` already reached the kernel."""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class _Setup:
    """What :func:`setup_telemetry` did in this process; changed only under ``_lock``."""

    configured: bool = False
    stream: _AppendLines | None = None


_setup = _Setup()
_lock = threading.Lock()


def make_exporters(cfg: TelemetryConfig) -> tuple[SpanExporter, MetricExporter, _AppendLines | None]:
    """The span and metric exporters ``cfg`` names, and the file they share (console to a path only)."""
    if cfg.exporter == "console":
        stream = _AppendLines(cfg.console_path) if cfg.console_path else None
        out = cast(IO[str], stream or sys.stdout)
        spans = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
        meters = ConsoleMetricExporter(out=out, formatter=lambda data: data.to_json(indent=None) + "\n")
        return spans, meters, stream
    if cfg.exporter == "otlp":
        # Imported here: only an OTLP deployment pays for the HTTP/protobuf stack.
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = cfg.endpoint.rstrip("/")
        # An explicit endpoint is used verbatim by the exporters; the SDK default (env or
        # http://localhost:4318) already appends the signal path.
        span_exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces") if base else OTLPSpanExporter()
        metric_exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics") if base else OTLPMetricExporter()
        return span_exporter, metric_exporter, None
    raise ConfigError(f"unknown telemetry exporter {cfg.exporter!r}; known: none, console, otlp")


def setup_telemetry(cfg: TelemetryConfig, service: str) -> None:
    """Install the tracer and meter providers ``cfg`` asks for, once per process.

    Later calls do nothing (a restarted Ray actor is a new process and sets up again).
    ``none`` installs nothing, so stages keep the passthrough path and metric calls
    cost one attribute check.
    """
    with _lock:
        if _setup.configured:
            return
        _setup.configured = True
        if cfg.exporter == "none":
            return
        span_exporter, metric_exporter, stream = make_exporters(cfg)
        resource = Resource.create(
            {"service.name": service, "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"}
        )
        interval_ms = max(100, int(cfg.metric_interval_s * 1000))
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(span_exporter, schedule_delay_millis=min(5000, interval_ms))
        )
        reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval_ms)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        _setup.stream = stream
    install_providers(tracer_provider, meter_provider)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)


def install_providers(tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
    """Use these providers for tierflow's spans and metrics (tests pass in-memory ones).

    Unlike the OpenTelemetry globals, which can be set once per process, this can be
    undone with :func:`uninstall_providers`.
    """
    with _lock:
        _setup.configured = True
        installed.tracer_provider = tracer_provider
        installed.tracer = tracer_provider.get_tracer(SCOPE) if tracer_provider else None
        installed.meter_provider = meter_provider
        meter = meter_provider.get_meter(SCOPE) if meter_provider else None
        install_stage_instruments(meter)
        if meter is not None:
            register_controller_gauges(meter)
            register_pool_gauges(meter)


def uninstall_providers() -> None:
    """Forget the installed providers (without shutting them down): back to the passthrough path."""
    with _lock:
        installed.tracer = installed.tracer_provider = installed.meter_provider = None
        install_stage_instruments(None)
        forget_controller_state()
        forget_pool_state()


def shutdown_telemetry() -> None:
    """Flush and close the providers; afterwards spans pass through and metrics are no-ops."""
    tracer_provider, meter_provider, stream = installed.tracer_provider, installed.meter_provider, _setup.stream
    uninstall_providers()
    _setup.stream = None
    if tracer_provider is not None:
        tracer_provider.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown(timeout_millis=FLUSH_TIMEOUT_MS)
    if stream is not None:
        stream.close()
