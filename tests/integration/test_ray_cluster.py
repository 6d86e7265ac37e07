"""Tier pools on real multi-node Ray clusters: placed by their resources, surviving the loss of a node,
and given nodes by the cluster autoscaler when they wake."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _run(module: str, timeout_s: float) -> dict[str, Any]:
    """Run ``module`` in a separate process (this test session already holds a local Ray) for its JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", f"tests.integration.{module}"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"')]  # Ray's log lines aside
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def test_tiers_are_placed_by_custom_resources_on_a_joined_cluster() -> None:
    report = _run("cluster_placement", 240)
    assert report["missing"] == 0
    assert report["placement"]["worker.small"] == [report["nodes"]["small_node"]]
    assert report["placement"]["worker.large"] == [report["nodes"]["large_node"]]
    assert ["small", "large"] in report["paths"], "some requests escalated across the two nodes"


def test_losing_the_node_of_a_tier_loses_nothing_and_no_room_left_shows_as_under_capacity() -> None:
    report = _run("cluster_node_loss", 420)
    first, second = report["nodes"]["first"], report["nodes"]["second"]
    assert report["placement_before"] == [first, first]
    assert report["placement_after"] == [second, second]  # restarted where the resource still exists
    assert report["missing"] == 0
    assert report["delivered"] == 400 and report["delivered_twice"] == 0
    assert report["under_capacity"]["desired"] == 2 and report["under_capacity"]["ready"] == 0


def test_the_cluster_autoscaler_adds_a_node_for_a_waking_tier_and_takes_it_back() -> None:
    """Ray's fake-node autoscaler: the tier's resource exists only on a node type with min_workers = 0."""
    report = _run("cluster_autoscaling", 480)
    assert report["nodes_at_start"] == 1  # the first replica stayed pending until a node was added
    assert report["slept"] and report["released"]  # asleep at zero, the idle node given back
    assert report["answered"] == 30 and report["nodes_while_awake"] == 1
    assert ["small", "large"] in report["paths"]  # escalations woke the tier on its new node
    assert report["slept_again"] and report["released_again"]
