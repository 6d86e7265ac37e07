"""Telemetry end to end: console exporter on a real pipeline, one trace per request, tierflow.* metrics,
and request text (a canary) in no span, metric, Ray log or dead letter."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import ray

from infra.client import RequestProducer
from topics import Request

from .conftest import running, simulated_config
from .helpers import await_delivered, send_and_collect

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

CANARY = "CANARY-7f3a9c1e5b2d-prompt-text"
SPANS = {"tierflow.route", "tierflow.infer", "tierflow.verify", "tierflow.escalate", "tierflow.sink"}
METRICS = {
    "tierflow.requests",
    "tierflow.stage.records",
    "tierflow.results",
    "tierflow.answers",
    "tierflow.accepted",
    "tierflow.escalations",
    "tierflow.cost",
    "tierflow.dlq",
    "tierflow.latency.e2e",
    "tierflow.stage.duration",
    "tierflow.consumer.lag",
}


def _ray_log_files() -> list[Path]:
    node = ray._private.worker._global_node
    assert node is not None, "the ray_session fixture started Ray in this process"
    return [path for path in Path(node.get_session_dir_path(), "logs").rglob("*") if path.is_file()]


async def test_console_telemetry_has_one_trace_per_request_and_no_request_text(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any]
) -> None:
    console = tmp_path / "telemetry.jsonl"
    config = simulated_config(
        tmp_path, telemetry={"exporter": "console", "console_path": str(console), "metric_interval_s": 0.5}
    )
    now = time.time()
    requests = [Request(id=f"tel-{i}", input=f"{CANARY} query {i}", created_at=now) for i in range(40)]
    async with running(config, bootstrap, kafka):
        producer = RequestProducer(kafka, config.layout)
        await producer.start()
        try:
            await producer.send_raw(b"\xc1 not msgpack", key=b"p-poison")
        finally:
            await producer.stop()
        collector = await send_and_collect(config, kafka, requests, also={"p-poison"})
        # the client reads results as the sink does: a loaded machine can leave the sink behind it
        await await_delivered(config, {r.id for r in requests})
    # Pipeline.stop waits for every replica's run to return, and a run flushes its telemetry on the way out.

    assert set(collector.collected.results) == {r.id for r in requests}
    (letter,) = collector.collected.dead_letters
    assert letter.request_id == "p-poison" and letter.reason == "not_msgpack"

    text = console.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    spans = [line for line in lines if "span_id" in line.get("context", {})]
    traces: dict[str, set[str]] = defaultdict(set)
    names: dict[str, set[str]] = defaultdict(set)
    span_ids: dict[str, set[str]] = defaultdict(set)
    for span in spans:
        assert span["name"] in SPANS
        rid = span["attributes"]["tierflow.request_id"]
        traces[rid].add(span["context"]["trace_id"])
        names[rid].add(span["name"])
        span_ids[span["context"]["trace_id"]].add(span["context"]["span_id"])
    for request in requests:
        assert len(traces[request.id]) == 1, f"{request.id}: one trace across every hop"
        assert {"tierflow.route", "tierflow.infer", "tierflow.verify", "tierflow.sink"} <= names[request.id]
    assert len({next(iter(t)) for rid, t in traces.items() if rid.startswith("tel-")}) == len(requests)
    assert any("tierflow.escalate" in names[r.id] for r in requests), "threshold 0.8 escalates some requests"
    for span in spans:
        if span["name"] != "tierflow.route":  # the route span's parent is the client's (not exported)
            assert span["parent_id"] in span_ids[span["context"]["trace_id"]], "every hop hangs under the one before"

    metric_names = {
        metric["name"]
        for line in lines
        for resource in line.get("resource_metrics", ())
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    }
    assert metric_names >= METRICS
    assert all(name.startswith("tierflow.") for name in metric_names)

    assert CANARY not in text, "request text in the console telemetry"
    for path in _ray_log_files():
        assert CANARY.encode() not in path.read_bytes(), f"request text in the Ray log {path.name}"
    assert CANARY.encode() not in letter.payload_head and CANARY not in letter.detail
