"""`tierflow demo` — the README's first command — runs end to end and reports what the issue promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

KEYS = {
    "requests",
    "results",
    "lost",
    "duplicates",
    "dead_letters",
    "accuracy",
    "cost_per_request",
    "throughput_rps",
    "latency_ms",
    "tiers",
}


@pytest.mark.parametrize(("portfolio", "floor"), [("headlines", 0.75), ("simulated", 0.8)])
def test_demo_streams_and_reports(tmp_path: Path, portfolio: str, floor: float) -> None:
    report_path = tmp_path / "demo.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "demo",
            "--portfolio",
            portfolio,
            "--requests",
            "150",
            "--json",
            str(report_path),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert set(report) >= KEYS
    assert (report["requests"], report["results"], report["lost"], report["duplicates"]) == (150, 150, 0, 0)
    assert report["dead_letters"] == 0
    assert report["accuracy"] >= floor, "the ladder answers the held-out items well above chance"
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    first_tier = next(iter(report["tiers"].values()))
    assert first_tier["answered"] == 150, "every request starts at the cheapest tier"
    for tier in report["tiers"].values():
        assert {"answered", "accepted", "escalated", "accuracy"} <= set(tier)
    assert sum(t["accepted"] for t in report["tiers"].values()) == report["status"].get("ok", 0)
    assert "per tier" in proc.stdout and "overall" in proc.stdout
