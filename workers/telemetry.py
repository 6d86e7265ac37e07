"""Tracing and metrics, in one place, called from the stage loop only.

Every request is one trace: the client puts a W3C ``traceparent`` on the request
record and each stage opens a span under the incoming context and passes the new
context on in the headers of what it produces. The spans are ``tierflow.route``,
``tierflow.infer``, ``tierflow.verify`` and ``tierflow.sink``, plus a
``tierflow.escalate`` child of ``verify`` for every escalation (the next ``infer``
hangs under it). Without an SDK tracer provider the spans are non-recording and
the incoming context is passed on unchanged, so the trace id still survives every
hop.

Metrics all start with ``tierflow.`` (see :func:`_make_instruments`). They are
derived from what the loop already has — the topics it consumed and produced to —
so policies and handlers stay free of observability code; a produced Result, Task
or DeadLetter is decoded again only when a meter provider is installed.

:func:`setup_telemetry` installs the providers a ``[telemetry]`` table asks for
(``none`` installs nothing: the spans stay the zero-cost passthrough and every
``record`` call returns at its first line). Span and metric attributes are ids,
tiers, topics, codes and numbers — never prompt or answer text: exceptions are not
recorded on spans either, since their messages may quote a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Tracer

from topics.errors import ConfigError, DecodeError
from topics.messages import DeadLetter, Result, Status, Task
from topics.names import TopicLayout

if TYPE_CHECKING:
    from workers.spec import TelemetryConfig
    from workers.stage import Outbound

log = logging.getLogger("tierflow.telemetry")

TRACEPARENT = "traceparent"
PREFIX = "tierflow."
"""Every span and metric name starts with this."""
SPAN_NAMES = {"router": "route", "worker": "infer", "verifier": "verify", "sink": "sink"}
"""Span name (after the prefix) per stage kind; a worker's stage is ``worker.<tier>``."""
ESCALATE_SPAN = f"{PREFIX}escalate"
LAG_REFRESH_S = 1.0
"""Consumer lag is re-read at most this often per stage (it needs one ``position`` call per partition)."""
FLUSH_TIMEOUT_MS = 5000
"""Bound on a flush at the end of a stage: an unreachable OTLP collector must not hold a replica's exit."""
_DECODE_LIMIT = 1 << 40
"""Our own produced records were size-checked on the way in; re-decoding them needs no limit."""

Headers = list[tuple[str, bytes]]


@dataclass
class _Instruments:
    requests: Counter
    records: Counter
    results: Counter
    answers: Counter
    accepted: Counter
    escalations: Counter
    cost: Counter
    dead_letters: Counter
    e2e_latency: Histogram
    stage_duration: Histogram


@dataclass(frozen=True)
class _Controller:
    lam: float
    mu: float
    thresholds: dict[str, float]
    version: int


@dataclass
class _State:
    """What this process installed; replaced as a whole only under ``_lock``."""

    configured: bool = False
    tracer: Tracer | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    instruments: _Instruments | None = None
    stream: _AppendLines | None = None
    controller: _Controller | None = None
    lag_sources: dict[int, StageTelemetry] = field(default_factory=dict)


_state = _State()
_lock = threading.Lock()
_api_tracer = trace.get_tracer("tierflow")


# --- setup -----------------------------------------------------------------------------------------


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


def _exporters(cfg: TelemetryConfig) -> tuple[SpanExporter, MetricExporter, _AppendLines | None]:
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
        if _state.configured:
            return
        _state.configured = True
        if cfg.exporter == "none":
            return
        span_exporter, metric_exporter, stream = _exporters(cfg)
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
        _state.stream = stream
    install_providers(tracer_provider, meter_provider)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)


def install_providers(tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
    """Use these providers for tierflow's spans and metrics (tests pass in-memory ones).

    Unlike the OpenTelemetry globals, which can be set once per process, this can be
    undone with :func:`uninstall_providers`.
    """
    with _lock:
        _state.configured = True
        _state.tracer_provider = tracer_provider
        _state.tracer = tracer_provider.get_tracer("tierflow") if tracer_provider else None
        _state.meter_provider = meter_provider
        _state.instruments = _make_instruments(meter_provider.get_meter("tierflow")) if meter_provider else None


def uninstall_providers() -> None:
    """Forget the installed providers (without shutting them down): back to the passthrough path."""
    with _lock:
        _state.tracer = _state.tracer_provider = _state.meter_provider = _state.instruments = None
        _state.controller = None


def flush_telemetry(timeout_ms: int = FLUSH_TIMEOUT_MS) -> None:
    """Export what is buffered now: a stage calls it when its run ends, before Ray may kill the process."""
    if _state.tracer_provider is not None:
        _state.tracer_provider.force_flush(timeout_ms)
    if _state.meter_provider is not None:
        _state.meter_provider.force_flush(timeout_ms)


def shutdown_telemetry() -> None:
    """Flush and close the providers; afterwards spans pass through and metrics are no-ops."""
    tracer_provider, meter_provider, stream = _state.tracer_provider, _state.meter_provider, _state.stream
    uninstall_providers()
    _state.stream = None
    if tracer_provider is not None:
        tracer_provider.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown(timeout_millis=FLUSH_TIMEOUT_MS)
    if stream is not None:
        stream.close()


def tracing_enabled() -> bool:
    """True once an SDK tracer provider is installed (only then do spans record anything)."""
    if _state.tracer is not None:
        return True
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def metrics_enabled() -> bool:
    """True once a meter provider is installed (only then are produced records classified)."""
    return _state.instruments is not None


def _tracer() -> Tracer:
    return _state.tracer or _api_tracer


# --- trace context ---------------------------------------------------------------------------------


def new_trace_headers() -> Headers:
    """Headers that start a new trace (sampled), for clients that produce requests."""
    return [(TRACEPARENT, f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode())]


def trace_id(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The W3C trace id carried by ``headers``, if any."""
    for key, value in headers or ():
        if key == TRACEPARENT:
            parts = value.decode("ascii", "replace").split("-")
            return parts[1] if len(parts) == 4 else None
    return None


def passthrough(headers: Sequence[tuple[str, bytes]] | None) -> Headers:
    """The trace context of a record, to put unchanged on what it causes."""
    return [(key, value) for key, value in headers or () if key == TRACEPARENT]


def span_name(stage: str) -> str:
    """``tierflow.route`` for the router, ``tierflow.infer`` for every ``worker.<tier>``, …"""
    kind = stage.split(".", 1)[0]
    return PREFIX + SPAN_NAMES.get(kind, kind)


def _stage_tier(stage: str) -> str:
    return stage.split(".", 1)[1] if stage.startswith("worker.") else ""


def _carrier(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {key: value.decode("ascii", "replace") for key, value in headers or () if key == TRACEPARENT}


@contextmanager
def stage_span(stage: str, record: ConsumerRecord[bytes, bytes]) -> Iterator[Headers]:
    """Open the stage's span under the record's trace context; yield the headers to pass on."""
    attributes: dict[str, str | int] = {
        "tierflow.stage": stage,
        "messaging.destination.name": record.topic,
        "messaging.kafka.partition": record.partition,
        "messaging.kafka.offset": record.offset,
    }
    if tier := _stage_tier(stage):
        attributes["tierflow.tier"] = tier
    if record.key is not None:
        attributes["tierflow.request_id"] = record.key.decode("utf-8", "replace")
    with _tracer().start_as_current_span(
        span_name(stage),
        context=propagate.extract(_carrier(record.headers)),
        attributes=attributes,
        record_exception=False,  # an exception's message may quote the payload
        set_status_on_exception=False,
    ) as span:
        yield _inject(span) or passthrough(record.headers)


def _inject(span: Span) -> Headers:
    if not span.get_span_context().is_valid:
        return []
    out: dict[str, str] = {}
    propagate.inject(out, context=trace.set_span_in_context(span))
    return [(key, value.encode()) for key, value in out.items() if key == TRACEPARENT]


# --- metrics ---------------------------------------------------------------------------------------


def _make_instruments(meter: Meter) -> _Instruments:
    """Every tierflow metric. Attributes: ``stage``, ``tier``, ``from_tier``, ``status``, ``reason``,
    ``topic``, ``partition`` — never text."""
    meter.create_observable_gauge(
        f"{PREFIX}consumer.lag", [_observe_lag], "{record}", "Highwater minus position per assigned partition"
    )
    meter.create_observable_gauge(f"{PREFIX}controller.lambda", [_observe_controller("lam")], "1", "Controller λ")
    meter.create_observable_gauge(f"{PREFIX}controller.mu", [_observe_controller("mu")], "1", "Controller μ")
    meter.create_observable_gauge(
        f"{PREFIX}controller.threshold", [_observe_thresholds], "1", "Acceptance threshold per tier"
    )
    meter.create_observable_gauge(
        f"{PREFIX}controller.policy_version", [_observe_controller("version")], "1", "Policy version in force"
    )
    return _Instruments(
        requests=meter.create_counter(f"{PREFIX}requests", "{request}", "Request records the router consumed"),
        records=meter.create_counter(f"{PREFIX}stage.records", "{record}", "Records consumed per stage"),
        results=meter.create_counter(f"{PREFIX}results", "{result}", "Results produced, by status"),
        answers=meter.create_counter(f"{PREFIX}answers", "{answer}", "Answers produced per tier"),
        accepted=meter.create_counter(
            f"{PREFIX}accepted", "{answer}", "Answers accepted per tier (acceptance = accepted / answers)"
        ),
        escalations=meter.create_counter(f"{PREFIX}escalations", "{task}", "Escalations, by from_tier and tier"),
        cost=meter.create_counter(f"{PREFIX}cost", "1", "Total cost of the results produced, by status"),
        dead_letters=meter.create_counter(f"{PREFIX}dlq", "{record}", "Dead letters, by stage and reason"),
        e2e_latency=meter.create_histogram(
            f"{PREFIX}latency.e2e", "ms", "Request creation to final decision, by status"
        ),
        stage_duration=meter.create_histogram(
            f"{PREFIX}stage.duration", "ms", "Time a stage spends on one batch: decode, process, produce"
        ),
    )


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    for source in list(_state.lag_sources.values()):
        for (topic, partition), lag in source.lag.items():
            yield Observation(lag, {"stage": source.stage, "topic": topic, "partition": partition})


def _observe_controller(name: str) -> Any:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        controller = _state.controller
        return [] if controller is None else [Observation(getattr(controller, name))]

    return observe


def _observe_thresholds(options: CallbackOptions) -> Iterable[Observation]:
    controller = _state.controller
    if controller is None:
        return []
    return [Observation(value, {"tier": tier}) for tier, value in controller.thresholds.items()]


def record_controller_state(lam: float, mu: float, thresholds: dict[str, float], version: int) -> None:
    """The controller's current λ, μ, per-tier thresholds and policy version, read by the gauges
    ``tierflow.controller.*`` at every export (cheap: it only keeps the latest values)."""
    _state.controller = _Controller(float(lam), float(mu), {k: float(v) for k, v in thresholds.items()}, int(version))


class StageTelemetry:
    """What one stage loop reports: its spans' escalation children, its batch metrics and its lag.

    Topics are told apart by name (``<ns>.results``, ``<ns>.answers``, ``<ns>.escalate.<tier>``,
    ``<ns>.dlq``); the namespace comes from the loop's DLQ topic, so handlers need not say what
    they produced.
    """

    def __init__(self, stage: str, dlq_topic: str) -> None:
        self.stage = stage
        self.kind = stage.split(".", 1)[0]
        self.tier = _stage_tier(stage)
        layout = TopicLayout(dlq_topic.removesuffix(".dlq"), ())
        self.dlq_topic = layout.dlq
        self.results_topic = layout.results
        self.answers_topic = layout.answers
        self.escalate_prefix = layout.escalate_prefix
        self.lag: dict[tuple[str, int], int] = {}
        """Replaced whole by the loop, read by the exporter thread."""
        self._lag_at = 0.0

    def open(self) -> None:
        """Start reporting this loop's consumer lag."""
        _state.lag_sources[id(self)] = self

    def close(self) -> None:
        """Stop reporting lag and export what is buffered (the replica may be killed right after)."""
        _state.lag_sources.pop(id(self), None)
        self.lag = {}
        flush_telemetry()

    def trace_escalations(self, out: list[Outbound]) -> list[Outbound]:
        """Open a ``tierflow.escalate`` span (child of the open ``verify`` span) for every record produced
        to an escalate topic, and carry its context on instead: the next ``infer`` hangs under it."""
        if not tracing_enabled():
            return out
        return [self._escalate(item) if item.topic.startswith(self.escalate_prefix) else item for item in out]

    def _escalate(self, item: Outbound) -> Outbound:
        attributes = {
            "tierflow.stage": self.stage,
            "tierflow.tier": item.topic.removeprefix(self.escalate_prefix),
            "tierflow.request_id": item.key,
            "messaging.destination.name": item.topic,
        }
        span = _tracer().start_span(
            ESCALATE_SPAN, context=propagate.extract(_carrier(item.headers)), attributes=attributes
        )
        span.end()
        headers = _inject(span)
        if not headers:
            return item
        return replace(item, headers=[h for h in item.headers if h[0] != TRACEPARENT] + headers)

    def lag_due(self) -> bool:
        """Whether :meth:`refresh_lag` has anything to do now (cheap; checked every poll)."""
        return _state.instruments is not None and time.monotonic() - self._lag_at >= LAG_REFRESH_S

    async def refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Highwater minus position for every assigned partition whose highwater a fetch has reported."""
        self._lag_at = time.monotonic()
        lag: dict[tuple[str, int], int] = {}
        for tp in list(consumer.assignment()):
            try:
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                position = await asyncio.wait_for(consumer.position(tp), timeout=0.1)
            except (TimeoutError, KafkaError, AssertionError):  # moved away by a rebalance meanwhile
                continue
            lag[(tp.topic, tp.partition)] = max(0, highwater - position)
        self.lag = lag

    def batch_done(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], out: Sequence[Outbound], seconds: float
    ) -> None:
        """Count a batch whose outputs the broker acknowledged (a redone batch counts again:
        at-least-once, like the topics)."""
        inst = _state.instruments
        if inst is None:
            return
        stage = {"stage": self.stage}
        inst.records.add(len(records), stage)
        inst.stage_duration.record(seconds * 1000, stage)
        if self.kind == "router":
            inst.requests.add(len(records))
        for item in out:
            try:
                if item.topic == self.results_topic:
                    self._result(inst, Result.from_wire(item.value, _DECODE_LIMIT))
                elif item.topic == self.answers_topic:
                    inst.answers.add(1, {"tier": self.tier})
                elif item.topic.startswith(self.escalate_prefix):
                    task = Task.from_wire(item.value, _DECODE_LIMIT)
                    from_tier = task.history[-1].tier if task.history else ""
                    inst.escalations.add(1, {"tier": task.tier, "from_tier": from_tier})
                elif item.topic == self.dlq_topic:
                    letter = DeadLetter.from_wire(item.value, _DECODE_LIMIT)
                    inst.dead_letters.add(1, {"stage": self.stage, "reason": letter.reason})
            except DecodeError:  # our own record: cannot happen short of a bug; metrics must not crash a stage
                log.debug("telemetry: could not classify a record produced to %s", item.topic)

    @staticmethod
    def _result(inst: _Instruments, result: Result) -> None:
        status = {"status": result.status.value}
        inst.results.add(1, status)
        inst.cost.add(result.total_cost, status)
        inst.e2e_latency.record(result.latency_ms, status)
        if result.status is Status.OK and result.tier:
            inst.accepted.add(1, {"tier": result.tier})
