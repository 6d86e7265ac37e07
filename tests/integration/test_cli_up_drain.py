"""SIGTERM to `tierflow up` on the embedded broker: it finishes what the broker holds before stopping
it, and when ``broker.drain_s`` is too short it says how many requests it could not finish."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .test_cli_up_send import _ready, _wait_for_line

pytestmark = pytest.mark.integration

CONFIG = """
namespace = "{ns}"
results_path = "{results}"

[broker]
session_timeout_ms = 2000
drain_s = {drain_s}

[[tiers]]
name = "small"
backend = "simulated"
threshold = 0.0
num_cpus = 0.1
batch_size = {batch}
options = {{ accuracy = 0.9, seed = 1, latency_ms = {latency_ms} }}
"""


def _up_with_a_backlog(tmp_path: Path, requests: int, drain_s: float, latency_ms: float, batch: int) -> tuple:
    """Start ``up``, send ``requests`` without waiting, SIGTERM at once; return (exit code, stderr lines, ids
    the sink wrote)."""
    config = tmp_path / "tierflow.toml"
    results = tmp_path / "results.jsonl"
    config.write_text(
        CONFIG.format(
            ns=f"drain-{uuid.uuid4().hex[:8]}", results=results, drain_s=drain_s, latency_ms=latency_ms, batch=batch
        )
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "up", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen, bootstrap = _ready(up)
        lines = "".join(json.dumps({"id": f"d{i}", "input": f"question {i}"}) + "\n" for i in range(requests))
        send = subprocess.run(
            [sys.executable, "-m", "infra.cli", "send", "--config", str(config), "--bootstrap", bootstrap],
            input=lines,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert send.returncode == 0, send.stderr
        up.send_signal(signal.SIGTERM)
        seen += _wait_for_line(up, r"drained in|stopped draining", timeout_s=drain_s + 60)
        code = up.wait(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=30)
    written = [json.loads(line)["id"] for line in results.read_text().splitlines()] if results.exists() else []
    return code, seen, written


def test_sigterm_finishes_what_the_broker_holds_before_stopping_it(tmp_path: Path) -> None:
    code, seen, written = _up_with_a_backlog(tmp_path, requests=400, drain_s=120, latency_ms=20, batch=8)
    text = "\n".join(seen)
    assert "stopping: finishing what the embedded broker holds" in text, text
    assert re.search(r"drained in [\d.]+ s: every request the broker held has its result", text), text
    assert code == 0
    assert sorted(set(written)) == sorted(f"d{i}" for i in range(400)), "every request sent before SIGTERM"
    assert len(written) == len(set(written)), "the sink writes each result once"


def test_a_drain_cut_short_says_how_many_requests_it_could_not_finish(tmp_path: Path) -> None:
    # one request at a time at ~100 ms each: 300 requests cannot finish in 1 s
    code, seen, written = _up_with_a_backlog(tmp_path, requests=300, drain_s=1, latency_ms=100, batch=1)
    text = "\n".join(seen)
    line = next(line for line in seen if "stopped draining" in line)
    found = re.search(r"broker\.drain_s reached\): ([\d,]+) requests unfinished", line)
    assert found, text
    unfinished = int(found.group(1).replace(",", ""))
    unwritten = re.search(r"([\d,]+) results not written by the sink", line)
    assert unfinished > 0 and code == 1
    # nothing unaccounted for: what the sink wrote plus what the line reports covers every request sent
    accounted = len(set(written)) + unfinished + (int(unwritten.group(1).replace(",", "")) if unwritten else 0)
    assert accounted >= 300, (line, len(set(written)))
    assert "Traceback" not in text
