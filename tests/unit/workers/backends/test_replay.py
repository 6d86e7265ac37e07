"""The replay and recorded backends answer exactly what was recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.topics.test_traces import row
from topics.errors import ConfigError
from topics.traces import append_rows
from workers.backends import create_backend, recorded
from workers.backends.base import Query


def test_replay_returns_the_recorded_answer_by_id_or_by_text(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    rows = [row("1", "small", output="A", confidence=0.3), row("2", "small"), row("1", "large", output="C")]
    append_rows(trace, rows)
    backend = create_backend("replay", "small", {"trace": str(trace)})
    backend.load()
    by_id, by_text, unknown = asyncio.run(
        backend.infer([Query("1", "ignored"), Query("other-id", "question   2?"), Query("9", "never seen")])
    )
    recorded_one = rows[0]
    assert (by_id.output, by_id.confidence, dict(by_id.features)) == ("A", 0.3, recorded_one.features)
    assert (by_id.tokens_in, by_id.tokens_out, by_id.cost, by_id.latency_ms) == (12, 1, 1.5e-7, 3.25)
    assert by_text.output == "B"
    assert unknown.error is not None and unknown.confidence == 0.0
    assert backend.model_name == "model-small"


def test_replay_as_another_tier_and_bad_options(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    append_rows(trace, [row("1", "large", output="C")])
    backend = create_backend("replay", "top", {"trace": str(trace), "model": "large"})
    backend.load()
    assert asyncio.run(backend.infer([Query("1", "")]))[0].output == "C"
    with pytest.raises(ConfigError, match="no rows for tier 'small'; it has: large"):
        create_backend("replay", "small", {"trace": str(trace)}).load()
    with pytest.raises(ConfigError, match="'trace' must be"):
        create_backend("replay", "small", {})
    with pytest.raises(ConfigError, match="has no option 'speed'"):
        create_backend("replay", "small", {"trace": str(trace), "speed": 2})


def _routellm(folder: Path) -> Path:
    folder.mkdir()
    (folder / "mmlu_anatomy.csv").write_text(
        "prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview\n"
        '"Q1\nA. a\nB. b\nAnswer:",True,True\n'
        '"Q2\nA. a\nB. b\nAnswer:",False,True\n'
        '"Q3\nA. a\nB. b\nAnswer:",False,False\n'
    )
    return folder


class _Item:
    def __init__(self, id: str, text: str, label: str) -> None:
        self.id, self.text, self.label = id, text, label


def test_recorded_rows_carry_correctness_prices_and_a_leave_one_out_subject_prior(tmp_path: Path) -> None:
    folder = _routellm(tmp_path / "routellm")
    items = [_Item("q1", "Q1\nA.  a\nB. b\nAnswer:", "B"), _Item("q2", "Q2\nA. a\nB. b\nAnswer:", "A")]
    items.append(_Item("q9", "not recorded", "A"))
    mixtral = recorded.recorded_rows(items, "mmlu", "mixtral", "mixtral-8x7b", folder)
    assert [(r.item_id, r.correct, r.output) for r in mixtral] == [("q1", True, "B"), ("q2", False, "?")]
    assert [r.confidence for r in mixtral] == [0.0, 0.5]  # accuracy on the other two anatomy questions
    assert all(r.source == "recorded" and r.category == "anatomy" for r in mixtral)
    gpt4 = recorded.recorded_rows(items, "mmlu", "gpt4", "gpt-4-1106-preview", folder)
    assert gpt4[0].cost == pytest.approx(gpt4[0].tokens_in * 10e-6 + 30e-6)
    assert [r.confidence for r in gpt4] == [0.5, 0.5]
