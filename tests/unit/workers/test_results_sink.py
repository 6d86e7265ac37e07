"""The JSONL results sink delivers each request id once, across batches and replicas."""

from __future__ import annotations

import json
from pathlib import Path

from topics import Result, Status
from workers.results_sink import JsonlResults


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_repeats_in_and_across_batches_are_delivered_once(tmp_path: Path) -> None:
    sink = JsonlResults(tmp_path / "r.jsonl")
    assert sink.deliver([Result("a", Status.OK), Result("b", Status.OK), Result("a", Status.EXHAUSTED)]) == 2
    assert sink.deliver([Result("b", Status.OK), Result("c", Status.OK)]) == 1
    assert _ids(tmp_path / "r.jsonl") == ["a", "b", "c"]
    assert sink.duplicates == 2


def test_a_second_replica_sees_what_the_first_delivered(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    first, second = JsonlResults(path), JsonlResults(path)
    first.deliver([Result("a", Status.OK)])
    second.deliver([Result("a", Status.OK), Result("b", Status.OK)])
    first.deliver([Result("b", Status.OK)])
    assert _ids(path) == ["a", "b"]


def test_a_restarted_sink_keeps_its_promise(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    JsonlResults(path).deliver([Result("a", Status.OK)])
    assert JsonlResults(path).deliver([Result("a", Status.OK)]) == 0
