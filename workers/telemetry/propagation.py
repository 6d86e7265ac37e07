"""W3C trace context through Kafka headers: one trace per request, one span per stage it passes.

The client puts a ``traceparent`` on the request record; each stage opens its span under
the incoming context (:func:`stage_span`) and passes the new context on in the headers of
what it produces. Without an SDK tracer provider the spans are non-recording and the
incoming ``traceparent`` is passed on unchanged, so the trace id still survives every hop.
Only ``traceparent`` travels: the other propagated keys (baggage…) could carry text.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from aiokafka import ConsumerRecord
from opentelemetry import propagate, trace
from opentelemetry.trace import Span

from workers.telemetry.providers import PREFIX, installed, tracer

TRACEPARENT = "traceparent"
SPAN_NAMES = {"router": "route", "worker": "infer", "verifier": "verify", "sink": "sink"}
"""Span name (after the prefix) per stage kind; a worker's stage is ``worker.<tier>``."""

Headers = list[tuple[str, bytes]]


def tracing_enabled() -> bool:
    """True once an SDK tracer provider is installed (only then do spans record anything)."""
    if installed.tracer is not None:
        return True
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


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


def stage_tier(stage: str) -> str:
    """The tier of a ``worker.<tier>`` stage; ``""`` for the other stages."""
    return stage.split(".", 1)[1] if stage.startswith("worker.") else ""


@contextmanager
def stage_span(stage: str, record: ConsumerRecord[bytes, bytes]) -> Iterator[Headers]:
    """Open the stage's span under the record's trace context; yield the headers to pass on."""
    attributes: dict[str, str | int] = {
        "tierflow.stage": stage,
        "messaging.destination.name": record.topic,
        "messaging.kafka.partition": record.partition,
        "messaging.kafka.offset": record.offset,
    }
    if tier := stage_tier(stage):
        attributes["tierflow.tier"] = tier
    if record.key is not None:
        attributes["tierflow.request_id"] = record.key.decode("utf-8", "replace")
    with tracer().start_as_current_span(
        span_name(stage),
        context=propagate.extract(_carrier(record.headers)),
        attributes=attributes,
        record_exception=False,  # an exception's message may quote the payload
        set_status_on_exception=False,
    ) as span:
        yield _inject(span) or passthrough(record.headers)


def child_span(name: str, headers: Sequence[tuple[str, bytes]], attributes: Mapping[str, str]) -> Headers:
    """Record a zero-length span ``name`` under the context ``headers`` carry and return the headers
    that name it as the parent (``[]`` when spans do not record), for what hangs under it."""
    span = tracer().start_span(name, context=propagate.extract(_carrier(headers)), attributes=attributes)
    span.end()
    return _inject(span)


def with_context(headers: Sequence[tuple[str, bytes]], context: Headers) -> Headers:
    """``headers`` with their trace context replaced by ``context``."""
    return [h for h in headers if h[0] != TRACEPARENT] + context


def _carrier(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {key: value.decode("ascii", "replace") for key, value in headers or () if key == TRACEPARENT}


def _inject(span: Span) -> Headers:
    if not span.get_span_context().is_valid:
        return []
    out: dict[str, str] = {}
    propagate.inject(out, context=trace.set_span_in_context(span))
    return [(key, value.encode()) for key, value in out.items() if key == TRACEPARENT]
