"""Tracing and metrics, called from the stage loop and the controller only.

Every request is one trace: the client puts a W3C ``traceparent`` on the request
record and each stage opens a span under the incoming context and passes the new
context on in the headers of what it produces. The spans are ``tierflow.route``,
``tierflow.infer``, ``tierflow.verify`` and ``tierflow.sink``, plus a
``tierflow.escalate`` child of ``verify`` for every escalation (the next ``infer``
hangs under it). Metrics all start with ``tierflow.``. Span and metric attributes
are ids, tiers, topics, codes and numbers — never prompt or answer text: exceptions
are not recorded on spans either, since their messages may quote a payload.

The package, bottom up (no module imports one above it, none imports the stage loop):

- :mod:`~workers.telemetry.providers` — the installed providers, the name prefix, flushing;
- :mod:`~workers.telemetry.propagation` — trace context through Kafka headers, the stage span;
- :mod:`~workers.telemetry.stage` — :class:`StageTelemetry`: the loop's metrics, lag and escalate spans;
- :mod:`~workers.telemetry.controller` — the budget controller's gauges;
- :mod:`~workers.telemetry.setup` — exporters and providers from a ``[telemetry]`` table.
"""

from workers.telemetry.controller import record_controller_state
from workers.telemetry.pools import record_pool_state
from workers.telemetry.propagation import (
    SPAN_NAMES,
    TRACEPARENT,
    Headers,
    new_trace_headers,
    passthrough,
    span_name,
    stage_span,
    trace_id,
    tracing_enabled,
)
from workers.telemetry.providers import FLUSH_TIMEOUT_MS, PREFIX, flush_telemetry
from workers.telemetry.setup import install_providers, setup_telemetry, shutdown_telemetry, uninstall_providers
from workers.telemetry.stage import ESCALATE_SPAN, LAG_REFRESH_S, Produced, StageTelemetry, metrics_enabled

__all__ = [
    "ESCALATE_SPAN",
    "FLUSH_TIMEOUT_MS",
    "LAG_REFRESH_S",
    "PREFIX",
    "SPAN_NAMES",
    "TRACEPARENT",
    "Headers",
    "Produced",
    "StageTelemetry",
    "flush_telemetry",
    "install_providers",
    "metrics_enabled",
    "new_trace_headers",
    "passthrough",
    "record_controller_state",
    "record_pool_state",
    "setup_telemetry",
    "shutdown_telemetry",
    "span_name",
    "stage_span",
    "trace_id",
    "tracing_enabled",
    "uninstall_providers",
]
