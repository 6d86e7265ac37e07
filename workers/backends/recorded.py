"""Recorded outputs of large LLMs (RouteLLM's MMLU set), as trace rows and as a tier.

lm-sys/RouteLLM publishes, per MMLU question, whether Mixtral-8x7B-Instruct and
GPT-4-1106-preview answered it correctly (``routellm-mmlu/mmlu_<subject>.csv``:
``prompt`` plus one boolean column per model). Joined with our MMLU items by
normalised question text, they become tiers no laptop can run: mixed portfolios of
live small models and recorded big ones.

What the recording lacks, and what we do instead (all stated in the rows):

* the answer text: a correct answer is the gold letter, a wrong one is ``?``;
* token counts: estimated at 4 characters per token for the prompt, 1 output token
  (the letter); cost uses public list prices per token (``PRICES``);
* latency: 0 (unknown);
* a per-item confidence: the model's leave-one-out accuracy on the item's subject
  (its correctness on the *other* questions of that subject) — a category prior,
  the most a router can know about these tiers before calling them.

The data live outside the project (``../shared/data`` on machines that have it, or
``$TIERFLOW_SHARED_DATA``); they are never copied in.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topics.errors import ConfigError, DataError
from topics.traces import TraceRow
from workers.backends.assets import mmlu as mmlu_data
from workers.backends.base import register_backend
from workers.backends.replay import ReplayBackend, normalised_text


@dataclass(frozen=True, slots=True)
class RecordedModel:
    column: str
    """The model's column in the RouteLLM CSVs."""
    price_per_input_token: float
    price_per_output_token: float


PRICES_NOTE = "GPT-4-1106-preview: OpenAI list price $10 / $30 per 1M tokens; Mixtral-8x7B: Together AI $0.60 / 1M"
RECORDED_MODELS: Mapping[str, RecordedModel] = {
    "mixtral-8x7b": RecordedModel("mistralai/Mixtral-8x7B-Instruct-v0.1", 0.6e-6, 0.6e-6),
    "gpt-4-1106-preview": RecordedModel("gpt-4-1106-preview", 10e-6, 30e-6),
}
CHARS_PER_TOKEN = 4


def shared_data_dir() -> Path:
    """``$TIERFLOW_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    configured = os.environ.get("TIERFLOW_SHARED_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def routellm_dir() -> Path | None:
    """The RouteLLM MMLU folder if this machine has it."""
    folder = shared_data_dir() / "routellm-mmlu"
    return folder if any(folder.glob("mmlu_*.csv")) else None


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    subject: str
    correct: bool
    subject_accuracy_loo: float
    """Accuracy on the other questions of the subject (0.5 for a one-question subject)."""


@functools.cache
def load_routellm(folder: Path, model: str) -> dict[str, RecordedAnswer]:
    """Per normalised prompt, ``model``'s recorded correctness and its subject's leave-one-out accuracy."""
    column = RECORDED_MODELS[model].column
    by_subject: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(folder.glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_").replace("_", " ")
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                rows = [(normalised_text(r["prompt"]), r[column].strip() == "True") for r in csv.DictReader(handle)]
        except (OSError, KeyError, csv.Error) as exc:
            raise DataError(f"cannot read recorded outputs {path}: {exc}") from exc
        by_subject[subject] = rows
    answers = {}
    for subject, rows in by_subject.items():
        total = sum(correct for _, correct in rows)
        for prompt, correct in rows:
            others = len(rows) - 1
            loo = (total - correct) / others if others else 0.5
            answers[prompt] = RecordedAnswer(subject, correct, loo)
    return answers


def recorded_row(
    item_id: str, dataset: str, text: str, label: str, tier: str, model: str, answer: RecordedAnswer
) -> TraceRow:
    prices = RECORDED_MODELS[model]
    tokens_in = math.ceil(len(text) / CHARS_PER_TOKEN)
    return TraceRow(
        item_id=item_id,
        dataset=dataset,
        input=text,
        label=label,
        tier=tier,
        model=model,
        output=label if answer.correct else "?",
        correct=answer.correct,
        confidence=answer.subject_accuracy_loo,
        features={"subject_accuracy": answer.subject_accuracy_loo},
        tokens_in=tokens_in,
        tokens_out=1,
        cost=tokens_in * prices.price_per_input_token + prices.price_per_output_token,
        category=answer.subject,
        source="recorded",
    )


def recorded_rows(items: Sequence[Any], dataset: str, tier: str, model: str, folder: Path) -> list[TraceRow]:
    """Rows for each item (``id``, ``text``, ``label``) that the recording has; the rest are skipped."""
    answers = load_routellm(folder, model)
    rows = []
    for item in items:
        answer = answers.get(normalised_text(item.text))
        if answer is not None:
            rows.append(recorded_row(item.id, dataset, item.text, item.label, tier, model, answer))
    return rows


@register_backend("recorded")
class RecordedBackend(ReplayBackend):
    """A tier answering as a recorded model (``model`` = ``mixtral-8x7b`` or ``gpt-4-1106-preview``).

    Lookup is by question text; the gold letter comes from the question's MMLU
    record, which the request does not carry, so the backend reads it from the
    fetched MMLU data set.
    """

    OPTIONS = frozenset({"model"})
    """Only ``model``: the rows are built from the RouteLLM data, not read from a ``trace``,
    and ``pace`` (inherited from replay) would sleep the recorded latency, which is 0."""

    def _check_options(self, options: Mapping[str, Any]) -> None:
        model = options.get("model")
        if model not in RECORDED_MODELS:
            raise ConfigError(f"tier {self.tier!r} option 'model' must be one of {', '.join(RECORDED_MODELS)}")
        self.replayed = str(model)

    def rows(self) -> list[TraceRow]:
        folder = routellm_dir()
        if folder is None:
            raise ConfigError(f"recorded tier {self.tier!r} needs {shared_data_dir() / 'routellm-mmlu'} (not found)")
        return recorded_rows(mmlu_data.load_questions(), "mmlu", self.replayed, self.replayed, folder)
