"""The trace file format: round trip, torn last lines, bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from topics.errors import DataError
from topics.traces import TraceRow, append_rows, models_of, read_trace, truncate_torn_tail


def row(item: str, tier: str, **changes: object) -> TraceRow:
    fields: dict[str, object] = {
        "item_id": item, "dataset": "mmlu", "input": f"question {item}?", "label": "B", "tier": tier,
        "model": f"model-{tier}", "output": "B", "correct": True, "confidence": 0.75,
        "features": {"max_prob": 0.75, "margin": 0.5}, "tokens_in": 12, "tokens_out": 1,
        "latency_ms": 3.25, "cost": 1.5e-7, "category": "anatomy",
    }  # fmt: skip
    fields.update(changes)
    return TraceRow(**fields)  # type: ignore[arg-type]


def test_rows_round_trip_exactly(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [row("1", "small"), row("1", "large", confidence=0.1 + 0.2, error="timeout"), row("2", "small")]
    append_rows(path, rows[:2])
    append_rows(path, rows[2:])
    assert read_trace(path) == rows
    assert models_of(rows) == ["small", "large"]


def test_a_torn_last_line_is_skipped_and_can_be_cut(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    append_rows(path, [row("1", "small"), row("2", "small")])
    whole = path.read_bytes()
    path.write_bytes(whole[:-20])  # killed mid-write
    assert [r.item_id for r in read_trace(path)] == ["1"]
    truncate_torn_tail(path)
    assert path.read_bytes() == whole[: whole.index(b"\n") + 1]


def test_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    append_rows(path, [row("1", "small")])
    with path.open("a") as handle:
        handle.write('{"item_id": "2"}\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: not a trace row"):
        read_trace(path)
    path.write_text("not json\n")
    with pytest.raises(DataError, match=r"t.jsonl:1: not JSON"):
        read_trace(path)
    with pytest.raises(DataError, match="cannot read trace"):
        read_trace(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [("confidence", "NaN", "confidence is nan"), ("features", {"margin": "-Infinity"}, "features.margin is -inf")],
)
def test_a_nan_or_an_infinity_is_named_with_its_field(tmp_path: Path, field: str, value: object, said: str) -> None:
    path = tmp_path / "t.jsonl"
    append_rows(path, [row("1", "small")])
    doc = json.loads(path.read_text())
    doc[field] = {k: float(v) for k, v in value.items()} if isinstance(value, dict) else float(str(value))
    path.write_text(json.dumps(doc) + "\n")  # Python's json writes NaN and -Infinity as bare words
    with pytest.raises(DataError, match=rf"t.jsonl:1: {said}: a trace needs finite numbers"):
        read_trace(path)
