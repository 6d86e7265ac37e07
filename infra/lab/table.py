"""A trace as item x tier arrays, split into train and test by a salted hash of the item id.

Policies are fitted on the train split and reported on the test split; the split
depends only on the item id, so it is the same for every policy, machine and run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from policies.base import TierInfo
from topics.errors import DataError
from topics.traces import TraceRow, models_of

_SPLIT_SALT = b"tierflow-lab-split-v1\x00"


def in_train(item_id: str, train_fraction: float, seed: int = 0) -> bool:
    """Whether ``item_id`` is in the train split: a hash, so an item keeps its side as a trace grows;
    ``seed`` > 0 draws another split (to see how much a result owes to the split)."""
    salt = _SPLIT_SALT + (seed.to_bytes(8, "big") if seed else b"")
    digest = hashlib.blake2b(salt + item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < train_fraction * 2**64


@dataclass(frozen=True)
class TraceTable:
    """Items that every tier answered, in a fixed order; ``rows[i][t]`` is item i's row for tier t."""

    tiers: tuple[str, ...]
    items: tuple[str, ...]
    rows: tuple[tuple[TraceRow, ...], ...]

    @classmethod
    def from_rows(cls, rows: Sequence[TraceRow], tiers: Sequence[str] | None = None) -> TraceTable:
        """Keep the items every tier of ``tiers`` (default: all, in trace order) answered."""
        present = models_of(rows)
        order = tuple(tiers) if tiers else tuple(present)
        unknown = sorted(set(order) - set(present))
        if unknown:
            raise DataError(f"the trace has no tier {unknown[0]!r}; it has: {', '.join(present)}")
        by_item: dict[str, dict[str, TraceRow]] = {}
        for number, row in enumerate(rows, start=1):
            per = by_item.setdefault(row.item_id, {})
            if row.tier in per:  # one would silently replace the other
                raise DataError(f"row {number}: a second row for item {row.item_id!r} and tier {row.tier!r}")
            per[row.tier] = row
        complete = [(item, per) for item, per in by_item.items() if all(t in per for t in order)]
        if not complete:
            raise DataError("no item of the trace was answered by every tier")
        return cls(order, tuple(i for i, _ in complete), tuple(tuple(per[t] for t in order) for _, per in complete))

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, keep: Sequence[int]) -> TraceTable:
        return TraceTable(self.tiers, tuple(self.items[i] for i in keep), tuple(self.rows[i] for i in keep))

    def split(self, train_fraction: float = 0.5, seed: int = 0) -> tuple[TraceTable, TraceTable]:
        """(train, test); either empty is a DataError naming the sizes."""
        train = [i for i, item in enumerate(self.items) if in_train(item, train_fraction, seed)]
        chosen = set(train)
        test = [i for i in range(len(self.items)) if i not in chosen]
        if not train or not test:
            sizes = f"{len(train)} train and {len(test)} test"
            raise DataError(f"splitting {len(self)} items gave {sizes}: the trace needs more items")
        return self.subset(train), self.subset(test)

    @cached_property
    def correct(self) -> npt.NDArray[np.bool_]:
        return np.array([[r.correct for r in per] for per in self.rows], dtype=bool)

    @cached_property
    def cost(self) -> npt.NDArray[np.float64]:
        return np.array([[r.cost for r in per] for per in self.rows], dtype=float)

    @cached_property
    def confidence(self) -> npt.NDArray[np.float64]:
        """Per item and tier; 0 where the trace has none (see :attr:`has_confidence`)."""
        return np.array([[r.confidence or 0.0 for r in per] for per in self.rows], dtype=float)

    @cached_property
    def has_confidence(self) -> bool:
        """Whether every answer has a confidence (an imported table may have none)."""
        return all(r.confidence is not None for per in self.rows for r in per)

    def tier_infos(self) -> tuple[TierInfo, ...]:
        """The tiers with their mean cost: what the router knows ex ante."""
        return tuple(TierInfo(name, float(self.cost[:, t].mean())) for t, name in enumerate(self.tiers))
