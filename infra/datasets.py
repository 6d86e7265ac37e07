"""Labelled items the demo streams: held-out sarcasm headlines, or synthetic queries."""

from __future__ import annotations

import random
from dataclasses import dataclass

from topics.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    text: str
    label: str


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
    from workers.backends.sarcasm_data import test_items

    items = test_items()
    if n > len(items):
        raise ConfigError(f"the sarcasm test split has {len(items)} headlines; asked for {n}")
    sample = random.Random(seed).sample(items, n)
    return [Item(item_id, text, label) for item_id, text, label in sample]


DATASETS = {"synthetic": synthetic_items, "sarcasm": sarcasm_items}


def load_items(name: str, n: int, seed: int = 0) -> list[Item]:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](n, seed)
