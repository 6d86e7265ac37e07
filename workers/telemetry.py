"""Tracing and counters, in one place, called from the stage loop only.

Every request is one trace: the client puts a W3C ``traceparent`` on the request
record and each stage opens a span under the incoming context and passes the new
context on in the headers of what it produces. Without an SDK tracer provider the
spans are non-recording and the incoming context is passed on unchanged, so the
trace id still survives every hop. Span attributes are ids, tiers and numbers —
never prompt or answer text.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from aiokafka import ConsumerRecord
from opentelemetry import propagate, trace
from opentelemetry.trace import Span

TRACEPARENT = "traceparent"
Headers = list[tuple[str, bytes]]
_tracer = trace.get_tracer("tierflow")


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


def tracing_enabled() -> bool:
    """True once an SDK tracer provider is installed (only then do spans record anything)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def passthrough(headers: Sequence[tuple[str, bytes]] | None) -> Headers:
    """The trace context of a record, to put unchanged on what it causes."""
    return [(key, value) for key, value in headers or () if key == TRACEPARENT]


@contextmanager
def stage_span(stage: str, record: ConsumerRecord[bytes, bytes]) -> Iterator[Headers]:
    """Open ``tierflow.<stage>`` under the record's trace context; yield the headers to pass on."""
    carrier = {key: value.decode("ascii", "replace") for key, value in record.headers or () if key == TRACEPARENT}
    context = propagate.extract(carrier)
    attributes = {"messaging.destination": record.topic, "partition": record.partition, "offset": record.offset}
    with _tracer.start_as_current_span(f"tierflow.{stage}", context=context, attributes=attributes) as span:
        yield _inject(span) or passthrough(record.headers)


def _inject(span: Span) -> Headers:
    if not span.get_span_context().is_valid:
        return []
    out: dict[str, str] = {}
    propagate.inject(out, context=trace.set_span_in_context(span))
    return [(key, value.encode()) for key, value in out.items() if key == TRACEPARENT]
