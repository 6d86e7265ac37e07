"""``tierflow feedback`` checks every label line before it sends any: one line naming each bad one, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.cli.feedback import check_label, read_labels
from infra.cli.jsonl import BadLine
from infra.config import parse_config
from topics.feedback import Feedback

CONFIG = '[[tiers]]\nname = "small"\nbackend = "simulated"\n\n[[tiers]]\nname = "large"\nbackend = "simulated"\n'
TIERS = ("small", "large")
NOW = 1_700_000_000.0


def _check(item: object) -> Feedback:
    return check_label(json.dumps(item).encode(), TIERS, 1 << 20, NOW)


def test_each_kind_of_label_is_built_with_defaults() -> None:
    assert _check({"id": "a", "correct": True}) == Feedback(request_id="a", source="cli", at=NOW, correct=True)
    assert _check({"id": "b", "score": 0.5, "source": "rater-7", "at": 12.5}) == Feedback(
        request_id="b", source="rater-7", at=12.5, score=0.5
    )
    assert _check({"id": "c", "preferred_tier": "large"}).preferred_tier == "large"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": "a"}', "exactly one of correct, score, preferred_tier (got none)"),
        (b'{"id": "a", "correct": true, "score": 1}', "(got correct and score)"),
        (b'{"correct": true}', "id is required"),
        (b'{"id": "a", "correct": "yes"}', "correct must be true or false"),
        (b'{"id": "a", "score": 1.5}', "score must be in [0, 1], got 1.5"),
        (b'{"id": "a", "score": NaN}', "score must be a finite number"),
        (b'{"id": "a", "preferred_tier": "huge"}', "preferred_tier: unknown tier 'huge' (known: small, large)"),
        (b'{"id": "a", "correct": true, "scor": 1}', "unknown field 'scor'"),
        (b'{"id": "a", "correct": true, "at": -3}', "at must be epoch seconds"),
        (b'{"id": "' + b"x" * 300 + b'", "correct": true}', "id: expected `str` of length <= 200"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "each line must be a JSON object"),
    ],
)
def test_a_bad_line_names_its_field(line: bytes, message: str) -> None:
    config = parse_config({"tiers": [{"name": t, "backend": "simulated"} for t in TIERS]})
    given = read_labels([b'{"id": "ok", "correct": true}\n', line], "labels.jsonl", config, now=NOW)
    assert len(given.labels) == 1
    (problem,) = given.problems
    assert problem.startswith("labels.jsonl:2: ")
    assert message in problem


def test_a_bad_file_sends_nothing_and_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "tierflow.toml"
    config.write_text(CONFIG)
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "a", "correct": true}\n{"id": "b", "score": 2}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "infra.cli", "feedback", "--config", str(config), "--bootstrap", "127.0.0.1:1",
         "--file", str(labels)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"tierflow: error: {labels}:2: score must be in [0, 1], got 2.0"]
    assert "Traceback" not in proc.stderr


def test_a_label_may_name_the_tier_whose_answer_it_judges() -> None:
    label = check_label(b'{"id": "r1", "correct": true, "tier": "small"}', ("small", "large"), 1 << 20, 1.0)
    assert label.tier == "small"
    for line, said in (
        (b'{"id": "r1", "correct": true, "tier": "huge"}', "tier: unknown tier 'huge'"),
        (b'{"id": "r1", "preferred_tier": "large", "tier": "small"}', "tier: a preferred_tier label"),
    ):
        with pytest.raises(BadLine, match=said):
            check_label(line, ("small", "large"), 1 << 20, 1.0)
