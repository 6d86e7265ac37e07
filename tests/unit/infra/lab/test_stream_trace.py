"""Joining the stream's answers, copies, results and labels into a trace, without a broker."""

from __future__ import annotations

from infra.lab.stream_trace import StreamJoin, stream_trace, verdicts
from topics.feedback import Feedback
from topics.messages import Answer, Request, Result, Status, Task
from topics.names import TopicLayout

LAYOUT = TopicLayout("unit", ("small", "medium", "large"))
PROPENSITIES = {"small": 1.0, "medium": 0.1, "large": 0.1}


def _answer(rid: str, tier: str, output: str, copy: bool = False) -> Answer:
    task = Task(Request(rid, f"query {rid}", 0.0), tier, explored=copy, explore_copy=copy, propensities=PROPENSITIES)
    return Answer(task, f"model-{tier}", output, 0.7, features={"max_prob": 0.7}, cost={"small": 1.0}.get(tier, 9.0))


def _result(rid: str, path: tuple[str, ...], explored: bool, output: str, at: float = 100.0) -> Result:
    return Result(rid, Status.OK, output=output, tier=path[-1], path=path, completed_at=at, explored=explored,
                  propensities=PROPENSITIES)  # fmt: skip


def _label(rid: str, correct: bool, tier: str = "", at: float = 200.0) -> Feedback:
    return Feedback(rid, "unit", at, correct=correct, tier=tier)


def _join() -> StreamJoin:
    join = StreamJoin(LAYOUT)
    records = [
        (LAYOUT.results, _result("a", ("small",), explored=True, output="yes")),
        (LAYOUT.answers, _answer("a", "small", "yes")),
        (LAYOUT.answers, _answer("a", "small", "yes")),  # a redone hop: the first answer stands
        (LAYOUT.explored, _answer("a", "medium", "yes", copy=True)),
        (LAYOUT.explored, _answer("a", "large", "no", copy=True)),
        (LAYOUT.feedback, _label("a", True)),
        (LAYOUT.results, _result("b", ("small", "large"), explored=False, output="yes")),
        (LAYOUT.answers, _answer("b", "small", "no")),
        (LAYOUT.answers, _answer("b", "large", "yes")),
        (LAYOUT.feedback, _label("b", False, tier="small")),
        (LAYOUT.results, _result("c", ("small",), explored=False, output="yes")),  # never labelled
        (LAYOUT.answers, _answer("c", "small", "yes")),
    ]
    for topic, message in records:
        join.add(topic, message.to_wire())
    join.add(LAYOUT.feedback, b"not a label")
    return join


def test_rows_carry_the_verdicts_labels_decide_and_the_propensity_each_was_recorded_with() -> None:
    trace = stream_trace(_join())
    rows = {(r.item_id, r.tier): r for r in trace.rows}
    assert set(rows) == {("a", "small"), ("a", "medium"), ("b", "small")}  # b's large answer: no verdict
    assert rows["a", "small"].correct and rows["a", "medium"].correct  # the same output shares the label
    assert not rows["b", "small"].correct  # a label that names its tier
    assert [rows["a", t].propensity for t in ("small", "medium")] == [1.0, 0.1]
    assert rows["b", "small"].propensity == 1.0 and rows["a", "medium"].cost == 9.0
    assert (trace.requests, trace.explored, trace.unlabelled) == (2, 1, 1)
    assert [r.tier for r in trace.rows] == sorted((r.tier for r in trace.rows), key=LAYOUT.tiers.index)
    assert _join().undecodable == {LAYOUT.feedback: 1}


def test_with_one_right_answer_a_correct_label_makes_every_other_output_wrong() -> None:
    rows = {(r.item_id, r.tier): r for r in stream_trace(_join(), one_right_answer=True).rows}
    assert not rows["a", "large"].correct and rows["a", "large"].propensity == 0.1
    assert ("b", "large") not in rows  # b's label says small was wrong, which says nothing of "yes"


def test_a_later_label_on_the_same_answer_wins_and_since_filters_by_completion() -> None:
    result = _result("d", ("small",), explored=False, output="x")
    answers = {"small": _answer("d", "small", "x")}
    assert verdicts(result, answers, [_label("d", True, at=5.0), _label("d", False, at=9.0)], False) == {"small": False}
    assert stream_trace(_join(), since=150.0).rows == []


def test_copies_of_a_request_whose_result_says_it_was_not_explored_are_left_out() -> None:
    join = StreamJoin(LAYOUT)
    for topic, message in (
        (LAYOUT.results, _result("e", ("small",), explored=False, output="yes")),
        (LAYOUT.answers, _answer("e", "small", "yes")),
        (LAYOUT.explored, _answer("e", "large", "yes", copy=True)),  # left by an earlier, redelivered draw
        (LAYOUT.feedback, _label("e", True)),
    ):
        join.add(topic, message.to_wire())
    assert [(r.tier, r.propensity) for r in stream_trace(join).rows] == [("small", 1.0)]
