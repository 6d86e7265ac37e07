"""`tierflow up` runs a config until Ctrl-C; `tierflow send --wait` gets every result back, and names
each request the pipeline dead-lettered instead (exit 1)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONFIG = """
namespace = "{ns}"
results_path = "{results}"

[broker]
session_timeout_ms = 2000

[[tiers]]
name = "small"
backend = "simulated"
threshold = 0.8
num_cpus = 0.1
options = {{ accuracy = 0.6, seed = 1 }}

[[tiers]]
name = "large"
backend = "simulated"
threshold = 0.0
num_cpus = 0.1
options = {{ accuracy = 0.9, seed = 2 }}
"""

DEPLOYED_LIMITS = "\n[limits]\nmax_payload_bytes = 4096\n"
"""The deployment's limit; the client's copy of the config leaves it at the default (1 MiB), as a
client whose config has drifted would, so a request between the two passes send's own check and
only the router can refuse it."""

GOOD = {"id": "fits", "input": "a short question"}


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout_s: float) -> list[str]:
    """Read stderr lines until one matches; fail with everything seen on timeout or exit."""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line:
            seen.append(line.rstrip())
            if re.search(pattern, line):
                return seen
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r}; saw: {seen}")


def _ready(up: subprocess.Popen[str]) -> tuple[list[str], str]:
    """The lines ``up`` printed until its pipeline was ready, and the bootstrap it named."""
    seen = _wait_for_line(up, r"pipeline ready", timeout_s=120)
    bootstrap = re.search(r"--bootstrap (\S+)", "\n".join(seen))
    assert bootstrap, seen
    return seen, bootstrap.group(1)


def _send_wait(config: Path, bootstrap: str, lines: str) -> subprocess.CompletedProcess[str]:
    """``tierflow send --wait`` of ``lines`` (JSONL) against the running pipeline."""
    args = ["send", "--config", str(config), "--bootstrap", bootstrap, "--wait", "--timeout", "60"]
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_up_then_send_wait_then_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "tierflow.toml"
    client_config = tmp_path / "client.toml"
    results = tmp_path / "results.jsonl"
    shared = CONFIG.format(ns=f"cli-{uuid.uuid4().hex[:8]}", results=results)
    config.write_text(shared + DEPLOYED_LIMITS)
    client_config.write_text(shared)
    up = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "up", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        _, bootstrap = _ready(up)
        lines = "".join(json.dumps({"id": f"q{i}", "input": f"question {i}"}) + "\n" for i in range(20))
        send = _send_wait(config, bootstrap, lines)
        assert send.returncode == 0, send.stderr
        got = [json.loads(line) for line in send.stdout.splitlines()]
        assert [r["id"] for r in got] == [f"q{i}" for i in range(20)]
        assert all(r["status"] == "ok" and r["path"][0] == "small" for r in got)

        big = {"id": "big", "input": "x" * 6000}
        send = _send_wait(client_config, bootstrap, "".join(json.dumps(x) + "\n" for x in (GOOD, big)))
        assert send.returncode == 1, send.stderr
        assert [json.loads(line)["id"] for line in send.stdout.splitlines()] == ["fits"]
        assert "stdin:2: request 'big' ended as a dead letter at the router (too_large: " in send.stderr, send.stderr
        assert "bytes > limit 4096)" in send.stderr and "1 of 2 requests ended as dead letters" in send.stderr
        assert "Traceback" not in send.stderr
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=90)
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(results.read_text().splitlines()) < 21:
        time.sleep(0.2)
    assert sorted(json.loads(line)["id"] for line in results.read_text().splitlines()) == sorted(
        [f"q{i}" for i in range(20)] + ["fits"]
    )
