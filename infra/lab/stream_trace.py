"""A trace from what the stream already produced: answers, exploration copies, results and labels.

``tierflow trace --from-kafka`` reads ``<ns>.answers`` (every tier a live path ran),
``<ns>.explored`` (the exploration copies' answers), ``<ns>.results`` (which request
was explored, and the propensities it recorded) and ``<ns>.feedback`` (labels), and joins
them by request id into trace rows the lab fits and evaluates on.

Correctness comes from labels only. A label judges the delivered answer, or the answer of
the tier it names; since correctness is a function of the query and the output, a verdict
carries over to every other tier's answer with the same output. With ``one_right_answer``
(classification, multiple choice: one output is right) an answer known right also makes
every different output wrong. An answer whose verdict stays unknown gets no row, like a
tier that never ran, so the lab treats it as unobserved. That is where the estimates lean on
the labels: rows missing because no label decided them are not missing by chance (a tier
whose output differed from a wrong delivered one, say), so label every answer of the requests
you label — explored ones above all — or use ``one_right_answer`` where it holds. A copy that
expired before its tier answered leaves no row either (it is dropped, never a result).

Each row's ``propensity`` is the probability it was going to be recorded: 1 for a tier on
the request's live path, the request's exploration share for a tier only a copy ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from topics.errors import DecodeError
from topics.feedback import Feedback
from topics.messages import Answer, Result
from topics.names import TopicLayout
from topics.traces import TraceRow

SCORE_CORRECT_AT = 0.5
"""A ``score`` label at or above this counts as correct (as ``trace import --correct-at`` defaults)."""


@dataclass
class StreamJoin:
    """The four topics' records by request id, as they are read (any order, duplicates allowed)."""

    layout: TopicLayout
    answers: dict[str, dict[str, Answer]] = field(default_factory=dict)
    """Path answers: request id -> tier -> its first answer there (a redone hop repeats it)."""
    copies: dict[str, dict[str, Answer]] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)
    labels: dict[str, list[Feedback]] = field(default_factory=dict)
    undecodable: Counter[str] = field(default_factory=Counter)
    """Records skipped because they do not decode, by topic (the stages dead-lettered them already)."""

    def add(self, topic: str, value: bytes) -> None:
        """One record of one of the four topics."""
        try:
            if topic == self.layout.feedback:
                label = Feedback.from_wire(value)
                self.labels.setdefault(label.request_id, []).append(label)
            elif topic == self.layout.results:
                result = Result.from_wire(value)
                self.results.setdefault(result.request_id, result)
            else:
                answer = Answer.from_wire(value)
                into = self.copies if topic == self.layout.explored else self.answers
                into.setdefault(answer.request_id, {}).setdefault(answer.tier, answer)
        except DecodeError:
            self.undecodable[topic] += 1


@dataclass(frozen=True)
class StreamTrace:
    rows: list[TraceRow]
    requests: int
    """Requests with at least one row (a labelled answer)."""
    explored: int
    """Of those, requests drawn for exploration."""
    unlabelled: int
    """Results in the time range whose answers no label decides (left out)."""


def _label_verdict(label: Feedback) -> bool | None:
    if label.correct is not None:
        return label.correct
    if label.score is not None:
        return label.score >= SCORE_CORRECT_AT
    return None  # a preferred tier says where the request should have gone, not whether an answer was right


def verdicts(
    result: Result, answers: dict[str, Answer], labels: Iterable[Feedback], one_right_answer: bool
) -> dict[str, bool]:
    """Per tier whose answer is in ``answers``, whether it was correct, where the labels decide it."""
    by_output: dict[str, bool] = {}
    for label in sorted(labels, key=lambda lb: lb.at):  # a later label on the same answer wins
        verdict = _label_verdict(label)
        output: str | None = result.output  # a label without a tier judges what was delivered
        if label.tier:
            judged = answers.get(label.tier)
            output = judged.output if judged is not None else None
        if verdict is not None and output is not None:
            by_output[output] = verdict
    right = next((output for output, ok in by_output.items() if ok), None)
    decided = {}
    for tier, answer in answers.items():
        if answer.output in by_output:
            decided[tier] = by_output[answer.output]
        elif one_right_answer and right is not None:
            decided[tier] = False
    return decided


def _row(answer: Answer, correct: bool, propensity: float, dataset: str) -> TraceRow:
    request = answer.task.request
    return TraceRow(
        item_id=request.id,
        dataset=dataset,
        input=request.input,
        label="",
        tier=answer.tier,
        model=answer.model,
        output=answer.output,
        correct=correct,
        confidence=answer.confidence,
        features=dict(answer.features),
        tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out,
        latency_ms=answer.latency_ms,
        cost=answer.cost,
        error=answer.error,
        propensity=propensity,
    )


def stream_trace(join: StreamJoin, since: float = 0.0, one_right_answer: bool = False) -> StreamTrace:
    """The trace rows of every result completed at or after ``since`` (epoch seconds), in ladder order
    per request; see the module docstring for how verdicts and propensities are found."""
    rows: list[TraceRow] = []
    requests = explored = unlabelled = 0
    order = {tier: i for i, tier in enumerate(join.layout.tiers)}
    for request_id, result in join.results.items():
        if result.completed_at < since:
            continue
        path = {t: a for t, a in join.answers.get(request_id, {}).items() if t in result.path}
        # Copies count only for a request its result says was explored (a redelivery drawn again
        # at another share may have left some), each at the propensity its own task recorded.
        copies = {t: a for t, a in join.copies.get(request_id, {}).items() if t not in path and result.explored}
        everything = path | copies
        decided = verdicts(result, everything, join.labels.get(request_id, ()), one_right_answer)
        if not decided:
            unlabelled += 1
            continue
        requests += 1
        explored += result.explored
        for tier, correct in decided.items():
            propensity = 1.0 if tier in path else copies[tier].task.propensities.get(tier, 0.0)
            if propensity > 0.0:
                rows.append(_row(everything[tier], correct, propensity, join.layout.namespace))
    # Tier by tier, in ladder order: a trace's tiers are in the order they first appear (``models_of``).
    rows.sort(key=lambda row: order.get(row.tier, len(order)))
    return StreamTrace(rows, requests, explored, unlabelled)


async def read_stream(
    kafka: Mapping[str, Any], layout: TopicLayout, partitions: Mapping[str, int], replication: int = 1
) -> StreamJoin:
    """Every record of the four topics, from their beginning to their end as it was when reading began."""
    from topics.admin import ensure_topics
    from topics.reader import TopicReader

    join = StreamJoin(layout)
    topics = [layout.results, layout.answers, layout.explored, layout.feedback]
    # A deployment from before exploration and labels lacks the last two: empty ones read as nothing.
    await ensure_topics(kafka, {t: partitions[t] for t in (layout.explored, layout.feedback)}, replication)
    async with TopicReader(kafka, topics, partitions={t: partitions[t] for t in topics}) as reader:
        async for batch in reader.read_to_end():
            for record in batch:
                join.add(record.topic, record.value or b"")
    return join
