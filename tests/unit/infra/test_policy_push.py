"""``tierflow policy push`` checks the file before sending: one line for each way it can be wrong."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from infra.cli.policy import read_rollout
from topics.errors import ConfigError
from topics.rollout import RolloutMode, policy_digest

TIERS = ("small", "large")
GOOD = {
    "format": "tierflow-policy",
    "version": 1,
    "name": "threshold",
    "tiers": ["small", "large"],
    "pre_call": {"name": "cheapest_first"},
    "post_hoc": {"name": "threshold", "params": {"thresholds": {"small": 0.4}}},
}


def _args(path: Path, canary: float | None = None, shadow: bool = False) -> argparse.Namespace:
    return argparse.Namespace(file=str(path), canary=canary, shadow=shadow)


def test_the_rollout_carries_the_checked_file_its_digest_and_its_reach(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(GOOD))
    live = read_rollout(_args(path), TIERS)
    assert live.mode is RolloutMode.LIVE and live.share == 1.0 and live.digest == policy_digest(live.policy)
    assert json.loads(live.policy) == {**GOOD, "family": "post-hoc", "fitted": {},
                                       "pre_call": {"name": "cheapest_first", "params": {}}}  # fmt: skip
    assert read_rollout(_args(path, canary=0.05), TIERS).mode is RolloutMode.CANARY
    assert read_rollout(_args(path, shadow=True), TIERS).mode is RolloutMode.SHADOW


@pytest.mark.parametrize(
    ("doc", "canary", "said"),
    [
        ("not json", None, "is not JSON"),
        (json.dumps({**GOOD, "tiers": ["small", "huge"]}), None, "fitted on tier 'huge', which the config lacks"),
        (json.dumps({**GOOD, "post_hoc": {"name": "nope"}}), None, "unknown post-hoc policy 'nope'"),
        (json.dumps(GOOD), 1.0, "--canary must be a share in"),
    ],
)
def test_a_file_that_cannot_run_is_one_line(tmp_path: Path, doc: str, canary: float | None, said: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(doc)
    with pytest.raises(ConfigError, match=said):
        read_rollout(_args(path, canary=canary), TIERS)
