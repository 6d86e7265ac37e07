"""Labelled items the demo and ``tierflow trace`` stream: sarcasm headlines, MMLU questions, synthetic queries."""

from __future__ import annotations

import random
from dataclasses import dataclass

from topics.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    text: str
    label: str
    category: str = ""


def synthetic_items(n: int, seed: int) -> list[Item]:
    """Queries for the simulated portfolio; the gold label is what simulated tiers get right."""
    from workers.backends.simulated import simulated_gold_label

    rng = random.Random(seed)
    out = []
    for i in range(n):
        item_id = f"syn-{seed}-{i}-{rng.getrandbits(32):08x}"
        out.append(Item(item_id, f"synthetic query {i}", simulated_gold_label(item_id)))
    return out


def sarcasm_items(n: int, seed: int) -> list[Item]:
    """A seeded sample of ``n`` held-out (test split) sarcasm headlines."""
    from workers.backends.assets.sarcasm import test_items

    items = test_items()
    if n > len(items):
        raise ConfigError(f"the sarcasm test split has {len(items)} headlines; asked for {n}")
    sample = random.Random(seed).sample(items, n)
    return [Item(item_id, text, label) for item_id, text, label in sample]


def mmlu_items(n: int, seed: int) -> list[Item]:
    """A seeded sample of ``n`` MMLU test questions (all subjects), as prompts with gold letters."""
    from workers.backends.assets.mmlu import load_questions

    questions = load_questions()
    if n > len(questions):
        raise ConfigError(f"MMLU has {len(questions)} questions; asked for {n}")
    return [Item(q.id, q.text, q.label, q.category) for q in random.Random(seed).sample(questions, n)]


DATASETS = {"synthetic": synthetic_items, "sarcasm": sarcasm_items, "mmlu": mmlu_items}


def load_items(name: str, n: int, seed: int = 0) -> list[Item]:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](n, seed)
