"""``tierflow trace`` on the simulated portfolio: rows, grading, resumption."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from infra.recorder import TraceOptions, grade, run_trace
from topics.errors import ConfigError, DataError
from topics.traces import read_trace


def _quiet() -> Console:
    return Console(quiet=True)


def test_every_item_gets_one_row_per_tier(tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    rows = run_trace(TraceOptions("simulated", n=30, seed=3, out=str(out)), _quiet())
    assert len(rows) == 90
    assert {r.tier for r in rows} == {"small", "medium", "large"}
    assert len({(r.item_id, r.tier) for r in rows}) == 90
    assert all(r.correct == (r.output == r.label) for r in rows)
    assert all(r.confidence is not None and 0.0 <= r.confidence <= 1.0 and r.dataset == "synthetic" for r in rows)


def test_an_interrupted_trace_resumes_to_the_same_rows(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jsonl"
    expected = run_trace(TraceOptions("simulated", n=25, seed=1, out=str(whole)), _quiet())
    partial = tmp_path / "partial.jsonl"
    data = whole.read_bytes()
    partial.write_bytes(data[: len(data) // 2 - 7])  # killed mid-line, half-way through
    resumed = run_trace(TraceOptions("simulated", n=25, seed=1, out=str(partial)), _quiet())

    def key(rows: list) -> dict:  # latency is measured, everything else is seeded
        return {(r.item_id, r.tier): (r.output, r.confidence, r.correct, r.cost) for r in rows}

    assert len(resumed) == len(expected) == 75
    assert key(resumed) == key(expected)


def test_a_trace_of_another_dataset_is_not_appended_to(tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    run_trace(TraceOptions("simulated", n=3, out=str(out)), _quiet())
    rows = read_trace(out)
    out.write_text(out.read_text().replace('"dataset":"synthetic"', '"dataset":"sarcasm"'))
    with pytest.raises(DataError, match="trace of sarcasm, not synthetic"):
        run_trace(TraceOptions("simulated", n=3, out=str(out)), _quiet())
    assert len(rows) == 9


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown portfolio"):
        run_trace(TraceOptions("nope", out=str(tmp_path / "t")), _quiet())
    with pytest.raises(ConfigError, match="--n must be"):
        run_trace(TraceOptions("simulated", n=0, out=str(tmp_path / "t")), _quiet())


@pytest.mark.parametrize(
    ("output", "label", "expected"),
    [("B", "B", True), ("b.", "B", True), ("B. Paris", "B", True), ("(C) Lyon", "C", True), ("Because", "B", False),
     ("sarcastic", "sarcastic", True), ("not_sarcastic", "sarcastic", False), ("", "A", False)],
)  # fmt: skip
def test_grade(output: str, label: str, expected: bool) -> None:
    assert grade(output, label) is expected
