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


def test_lines_a_crashed_writer_appended_but_never_indexed_still_count(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    sink = JsonlResults(path)
    sink.deliver([Result("a", Status.OK)])
    with path.open("a") as handle:  # appended, then the writer died before committing its index
        handle.write(json.dumps({"id": "b"}) + "\n")
    assert sink.deliver([Result("b", Status.OK), Result("c", Status.OK)]) == 1
    assert _ids(path) == ["a", "b", "c"]


def test_a_torn_last_line_is_cut_and_its_result_delivered_again(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    JsonlResults(path).deliver([Result("a", Status.OK)])
    with path.open("a") as handle:
        handle.write('{"id": "b", "sta')  # a crash mid-write
    assert JsonlResults(path).deliver([Result("b", Status.OK)]) == 1
    assert _ids(path) == ["a", "b"]


def test_a_replaced_file_rebuilds_the_index(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    sink = JsonlResults(path)
    sink.deliver([Result("a", Status.OK), Result("b", Status.OK)])
    path.write_text(json.dumps({"id": "b"}) + "\n")  # rotated: only b is in the new file
    assert sink.deliver([Result("a", Status.OK), Result("b", Status.OK)]) == 1
    assert _ids(path) == ["b", "a"]


def test_a_restarted_replica_knows_the_delivered_ids_from_the_index_alone(tmp_path: Path) -> None:
    """The ids are in the index file, not re-read from the results (nor held in memory)."""
    path = tmp_path / "r.jsonl"
    JsonlResults(path).deliver([Result(f"id{i}", Status.OK) for i in range(1000)])
    path.write_bytes(b"x" * path.stat().st_size)  # unreadable, same length: only the index can know
    assert JsonlResults(path).deliver([Result("id999", Status.OK), Result("new", Status.OK)]) == 1
