"""`tierflow up` runs a config until Ctrl-C; `tierflow send --wait` gets every result back."""

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


def test_up_then_send_wait_then_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "tierflow.toml"
    results = tmp_path / "results.jsonl"
    config.write_text(CONFIG.format(ns=f"cli-{uuid.uuid4().hex[:8]}", results=results))
    up = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "up", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen = _wait_for_line(up, r"pipeline ready", timeout_s=120)
        bootstrap = re.search(r"--bootstrap (\S+)", "\n".join(seen))
        assert bootstrap, seen
        lines = "".join(json.dumps({"id": f"q{i}", "input": f"question {i}"}) + "\n" for i in range(20))
        send = subprocess.run(
            [
                sys.executable,
                "-m",
                "infra.cli",
                "send",
                "--config",
                str(config),
                "--bootstrap",
                bootstrap.group(1),
                "--wait",
                "--timeout",
                "60",
            ],
            input=lines,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert send.returncode == 0, send.stderr
        got = [json.loads(line) for line in send.stdout.splitlines()]
        assert [r["id"] for r in got] == [f"q{i}" for i in range(20)]
        assert all(r["status"] == "ok" and r["path"][0] == "small" for r in got)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=90)
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(results.read_text().splitlines()) < 20:
        time.sleep(0.2)
    assert sorted(json.loads(line)["id"] for line in results.read_text().splitlines()) == sorted(
        f"q{i}" for i in range(20)
    )
