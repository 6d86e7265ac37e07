"""Spans, metrics and exporters of workers.telemetry, driven through the stage loop without Kafka.

In-memory providers are installed with ``install_providers`` (the OpenTelemetry globals can be set
once per process, so the exporter setup itself runs in a subprocess).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from policies import ConfidenceThreshold
from topics import Answer, Request, Result, Status, Task, TopicLayout
from workers import telemetry
from workers.context import StageContext
from workers.stage import Handler, Inbound, Outbound, StageLoop
from workers.telemetry import (
    PREFIX,
    StageTelemetry,
    install_providers,
    passthrough,
    record_controller_state,
    record_pool_state,
    span_name,
    stage_span,
    trace_id,
    uninstall_providers,
)
from workers.telemetry.setup import make_exporters
from workers.verifier import Verifier

from .helpers import TRACE, config

CANARY = "CANARY-7f3a9c1e-never-in-telemetry"
TRACE_ID = "0123456789abcdef0123456789abcdef"
PARENT_SPAN = "0123456789abcdef"
LAYOUT = TopicLayout("unit", ("small", "large"))


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        install_providers(tracer_provider, MeterProvider(metric_readers=[self.reader]))

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> (attributes, value or histogram) for every data point."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", point)
                        out.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
        return out

    def metrics_json(self) -> str:
        data = self.reader.get_metrics_data()
        assert data is not None
        return data.to_json()


@pytest.fixture
def otel() -> Iterator[Otel]:
    try:
        yield Otel()
    finally:
        uninstall_providers()


def _record(topic: str, value: bytes, key: str = "r1", offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, key.encode(), value, None, len(key), len(value), list(TRACE))


def _answer(rid: str, confidence: float, tier: str = "small") -> Answer:
    request = Request(rid, f"{CANARY} question {rid}", created_at=1.0)
    return Answer(Task(request, tier), "m", f"{CANARY} answer", confidence, cost=0.25)


class FakeVerifier(Handler[Answer]):
    """Escalates answers under 0.5 to ``large``, accepts the rest; enough to drive the loop."""

    stage = "verifier"

    def topics(self) -> list[str]:
        return ["unit.answers"]

    def decode(self, raw: bytes) -> Answer:
        return Answer.from_wire(raw)

    async def process(self, batch: Sequence[Inbound[Answer]]) -> list[Outbound]:
        out = []
        for inbound in batch:
            answer = inbound.message
            if answer.confidence < 0.5:
                task = Task(answer.task.request, "large", hop=1, history=(answer.as_history(),))
                out.append(Outbound("unit.escalate.large", answer.request_id, task.to_wire(), inbound.headers, task))
            else:
                result = Result(
                    answer.request_id, Status.OK, answer.output, answer.tier, total_cost=0.25, latency_ms=12.0
                )
                out.append(Outbound("unit.results", answer.request_id, result.to_wire(), inbound.headers, result))
        return out


async def _run_batch(loop: StageLoop[Any], records: list[ConsumerRecord[bytes, bytes]]) -> list[Outbound]:
    """One batch through the real loop, with produce stubbed out (its offsets only queue for a commit)."""
    sent: list[Outbound] = []

    async def send(out: list[Outbound]) -> None:
        sent.extend(out)

    loop._send = send  # type: ignore[method-assign]
    await loop._handle_batch(records)
    return sent


def _verifier_batch() -> list[ConsumerRecord[bytes, bytes]]:
    return [
        _record("unit.answers", _answer("r1", 0.9).to_wire(), "r1", 0),
        _record("unit.answers", _answer("r2", 0.1).to_wire(), "r2", 1),
        _record("unit.answers", b"\xc1 poison", "r3", 2),
    ]


def test_span_names_per_stage() -> None:
    assert span_name("router") == "tierflow.route"
    assert span_name("worker.small") == "tierflow.infer"
    assert span_name("verifier") == "tierflow.verify"
    assert span_name("sink") == "tierflow.sink"


@pytest.mark.parametrize("stage", ["router", "worker.small", "verifier", "sink"])
def test_a_stage_span_continues_the_incoming_trace(otel: Otel, stage: str) -> None:
    with stage_span(stage, _record("unit.x", b"")) as headers:
        pass
    (span,) = otel.finished()
    assert span.name == span_name(stage)
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_SPAN
    assert trace_id(headers) == TRACE_ID
    assert headers != passthrough(TRACE), "the outgoing context names this span as the parent"
    attributes = dict(span.attributes or {})
    assert attributes["tierflow.stage"] == stage and attributes["tierflow.request_id"] == "r1"
    assert attributes.get("tierflow.tier") == ("small" if stage == "worker.small" else None)


def test_without_a_provider_spans_pass_the_context_through_and_metrics_are_off() -> None:
    assert not telemetry.metrics_enabled()
    with stage_span("router", _record("unit.requests", b"")) as headers:
        pass
    assert headers == passthrough(TRACE)
    StageTelemetry("router", LAYOUT).batch_done([_record("unit.requests", b"")], [], 0.1)  # a no-op


async def test_the_loop_traces_escalations_under_the_verify_span(otel: Otel) -> None:
    loop = StageLoop(FakeVerifier(), {}, LAYOUT.dlq, group_id="g", layout=LAYOUT)
    sent = await _run_batch(loop, _verifier_batch())
    spans = {(s.name, dict(s.attributes or {}).get("tierflow.request_id")): s for s in otel.finished()}
    verify, escalate = spans["tierflow.verify", "r2"], spans["tierflow.escalate", "r2"]
    assert ("tierflow.escalate", "r1") not in spans, "an accepted answer is not escalated"
    assert escalate.parent is not None and verify.context is not None and escalate.context is not None
    assert escalate.parent.span_id == verify.context.span_id
    assert dict(escalate.attributes or {})["tierflow.tier"] == "large"
    (escalation,) = [o for o in sent if o.topic == "unit.escalate.large"]
    carried = dict(escalation.headers)["traceparent"].decode()
    assert carried.split("-")[2] == format(escalate.context.span_id, "016x"), "the next infer hangs under escalate"
    assert {trace_id(o.headers) for o in sent if o.topic != "unit.dlq"} == {TRACE_ID}


async def test_the_loop_records_metrics_by_topic(otel: Otel) -> None:
    loop = StageLoop(FakeVerifier(), {}, LAYOUT.dlq, group_id="g", layout=LAYOUT)
    await _run_batch(loop, _verifier_batch())
    points = otel.points()
    assert points["tierflow.results"] == [({"status": "ok"}, 1)]
    assert points["tierflow.accepted"] == [({"tier": "small"}, 1)]
    assert points["tierflow.escalations"] == [({"tier": "large", "from_tier": "small"}, 1)]
    assert points["tierflow.cost"] == [({"status": "ok"}, 0.25)]
    assert points["tierflow.dlq"] == [({"stage": "verifier", "reason": "not_msgpack"}, 1)]
    assert points["tierflow.stage.records"] == [({"stage": "verifier"}, 3)]
    ((attributes, latency),) = points["tierflow.latency.e2e"]
    assert attributes == {"status": "ok"} and latency.count == 1 and latency.sum == 12.0
    ((attributes, duration),) = points["tierflow.stage.duration"]
    assert attributes == {"stage": "verifier"} and duration.count == 1
    assert all(name.startswith(PREFIX) for name in points)


async def test_a_real_stage_hands_the_loop_the_messages_it_produced(otel: Otel) -> None:
    """Results, escalations and dead letters are counted from the messages the stage kept, not decoded again."""
    context = StageContext(config())
    verifier = Verifier(context, ConfidenceThreshold(thresholds={"small": 0.8, "large": 0.8}))
    loop = StageLoop(verifier, {}, context.layout.dlq, group_id="g", layout=context.layout)
    sent = await _run_batch(loop, _verifier_batch())
    assert len(sent) == 3
    assert all(item.message is not None and item.message.to_wire() == item.value for item in sent)
    points = otel.points()
    assert points["tierflow.results"] == [({"status": "ok"}, 1)]
    assert points["tierflow.escalations"] == [({"tier": "large", "from_tier": "small"}, 1)]
    assert points["tierflow.dlq"] == [({"stage": "verifier", "reason": "not_msgpack"}, 1)]


async def test_router_and_worker_counts(otel: Otel) -> None:
    router = StageTelemetry("router", LAYOUT)
    router.batch_done([_record("unit.requests", b"")] * 3, [], 0.01)
    worker = StageTelemetry("worker.small", LAYOUT)
    worker.batch_done([], [Outbound("unit.answers", "r1", b"")] * 2, 0.01)
    points = otel.points()
    assert points["tierflow.requests"] == [({}, 3)]
    assert points["tierflow.answers"] == [({"tier": "small"}, 2)]


async def test_request_and_answer_text_never_reach_spans_or_metrics(otel: Otel) -> None:
    loop = StageLoop(FakeVerifier(), {}, LAYOUT.dlq, group_id="g", layout=LAYOUT)
    await _run_batch(loop, _verifier_batch())
    spans = otel.finished()
    assert spans
    dumped = "\n".join(span.to_json() for span in spans) + otel.metrics_json()
    assert "question r1" not in dumped and CANARY not in dumped


class FakeConsumer:
    def __init__(self) -> None:
        self.tps = {TopicPartition("unit.answers", 0): (10, 4), TopicPartition("unit.answers", 1): (None, 0)}

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.tps[tp][0]

    async def position(self, tp: TopicPartition) -> int:
        return self.tps[tp][1]


async def test_consumer_lag_is_a_gauge_per_partition(otel: Otel) -> None:
    stage = StageTelemetry("verifier", LAYOUT)
    stage.open()
    try:
        assert stage.lag_due()
        await stage.refresh_lag(FakeConsumer())
        assert not stage.lag_due(), "re-read at most once per LAG_REFRESH_S"
        lag = otel.points()["tierflow.consumer.lag"]
    finally:
        stage.close()
    assert lag == [({"stage": "verifier", "topic": "unit.answers", "partition": 0}, 6)], "unknown highwater: skipped"
    assert "tierflow.consumer.lag" not in otel.points(), "a closed stage reports no lag"


def test_controller_gauges(otel: Otel) -> None:
    assert "tierflow.controller.lambda" not in otel.points(), "nothing before the controller reports"
    record_controller_state(0.5, 0.25, {"small": 0.8, "large": 0.6}, 7)
    points = otel.points()
    assert points["tierflow.controller.lambda"] == [({}, 0.5)]
    assert points["tierflow.controller.mu"] == [({}, 0.25)]
    assert points["tierflow.controller.policy_version"] == [({}, 7)]
    assert sorted(points["tierflow.controller.threshold"], key=str) == [
        ({"tier": "large"}, 0.6),
        ({"tier": "small"}, 0.8),
    ]


def test_pool_gauges(otel: Otel) -> None:
    assert "tierflow.pool.replicas" not in otel.points(), "nothing before a supervisor reports"
    record_pool_state({"router": (1, 1), "worker.large": (0, 2)})
    points = otel.points()
    assert sorted(points["tierflow.pool.replicas"], key=str) == [({"pool": "router"}, 1), ({"pool": "worker.large"}, 0)]
    assert sorted(points["tierflow.pool.desired"], key=str) == [({"pool": "router"}, 1), ({"pool": "worker.large"}, 2)]


def test_console_exporter_writes_json_lines_to_the_configured_file(tmp_path: Path) -> None:
    """In a fresh interpreter: setup_telemetry sets the process-wide providers, once."""
    path = tmp_path / "otel" / "telemetry.jsonl"
    script = textwrap.dedent(
        f"""
        from aiokafka import ConsumerRecord
        from infra.config import TelemetryConfig
        from topics import TopicLayout
        from workers.telemetry import StageTelemetry, setup_telemetry, shutdown_telemetry, stage_span, tracing_enabled

        cfg = TelemetryConfig(exporter="console", console_path={str(path)!r}, metric_interval_s=60)
        setup_telemetry(cfg, "tierflow-test")
        setup_telemetry(TelemetryConfig(exporter="otlp"), "ignored")  # idempotent: the first call wins
        assert tracing_enabled()
        record = ConsumerRecord("unit.requests", 0, 0, 0, 0, b"r1", b"", None, 2, 0, [])
        with stage_span("router", record):
            pass
        StageTelemetry("router", TopicLayout("unit", ())).batch_done([record], [], 0.01)
        shutdown_telemetry()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    spans = [line for line in lines if "span_id" in line.get("context", {})]
    assert [span["name"] for span in spans] == ["tierflow.route"]
    assert spans[0]["resource"]["attributes"]["service.name"] == "tierflow-test"
    names = {
        metric["name"]
        for line in lines
        if "resource_metrics" in line
        for resource in line["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    }
    assert {"tierflow.requests", "tierflow.stage.duration"} <= names


def test_an_unknown_exporter_is_a_config_error() -> None:
    from infra.config import TelemetryConfig
    from topics.errors import ConfigError

    with pytest.raises(ConfigError):
        make_exporters(TelemetryConfig(exporter="zipkin"))
