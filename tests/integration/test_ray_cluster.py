"""Tier pools land on the nodes their resources name, in a real multi-node Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_tiers_are_placed_by_custom_resources_on_a_joined_cluster() -> None:
    # A separate process: this test session already holds a local Ray of its own.
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.cluster_placement"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["missing"] == 0
    assert report["placement"]["worker.small"] == [report["nodes"]["small_node"]]
    assert report["placement"]["worker.large"] == [report["nodes"]["large_node"]]
    assert ["small", "large"] in report["paths"], "some requests escalated across the two nodes"
