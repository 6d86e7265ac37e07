"""The ``replay`` backend: a tier answers exactly what a trace recorded for it.

It turns a trace (``topics.traces``) back into a model: the same output,
confidence, features, tokens, cost and latency for the same item, every time, at
any rate. That makes the streaming pipeline reproducible against the offline policy
lab, and load tests run on real decision data instead of simulated draws.

Options:

* ``trace`` (required): path of the trace file (a relative path is taken from the
  config file's folder).
* ``model``: which tier of the trace to answer as (default: the tier's own name).
* ``pace`` (false): sleep for the recorded latency of each batch's slowest item,
  to reproduce timing; by default answers come back as fast as they are looked up.

Lookup: by request id (= the trace's item id when the items were streamed by
``demo`` or ``eval``), else by the input text, whitespace-normalised. An item the
trace does not hold gets an error Completion, so the verifier escalates it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from topics.errors import ConfigError
from topics.traces import TraceRow, models_of, read_trace
from workers.backends.base import Backend, Completion, Query, register_backend


def normalised_text(text: str) -> str:
    return " ".join(text.split())


@register_backend("replay")
class ReplayBackend(Backend):
    """A tier answering from a trace file; unknown option names are refused by ``create_backend``."""

    OPTIONS = frozenset({"trace", "model", "pace"})

    def __init__(self, tier: str, options: Mapping[str, Any]) -> None:
        super().__init__(tier, options)
        self.replayed = str(options.get("model", tier))
        self.pace = bool(options.get("pace", False))
        self._by_id: dict[str, TraceRow] = {}
        self._by_text: dict[str, TraceRow] = {}
        self._check_options(options)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        trace = options.get("trace")
        if not isinstance(trace, str) or not trace:
            raise ConfigError(f"tier {self.tier!r} option 'trace' must be the path of a trace file")
        self.trace_path = Path(trace)

    def rows(self) -> list[TraceRow]:
        """The rows this tier answers from (those of ``model`` in the trace)."""
        rows = read_trace(self.trace_path)
        mine = [row for row in rows if row.tier == self.replayed]
        if not mine:
            raise ConfigError(
                f"trace {self.trace_path} has no rows for tier {self.replayed!r}; it has: {', '.join(models_of(rows))}"
            )
        return mine

    @property
    def model_name(self) -> str:
        row = next(iter(self._by_id.values()), None)
        return row.model if row is not None else self.replayed

    def load(self) -> None:
        mine = self.rows()
        self._by_id = {row.item_id: row for row in mine}
        self._by_text = {normalised_text(row.input): row for row in mine}

    def lookup(self, query: Query) -> TraceRow | None:
        return self._by_id.get(query.request_id) or self._by_text.get(normalised_text(query.input))

    async def infer(self, batch: Sequence[Query]) -> list[Completion]:
        rows = [self.lookup(query) for query in batch]
        if self.pace:
            await asyncio.sleep(max((row.latency_ms for row in rows if row is not None), default=0.0) / 1000)
        return [self._replayed(row) for row in rows]

    def _replayed(self, row: TraceRow | None) -> Completion:
        if row is None:
            return Completion("", 0.0, error=f"item not recorded for {self.replayed}")
        return completion_from_row(row)


def completion_from_row(row: TraceRow) -> Completion:
    """What the tier answered, exactly as recorded."""
    return Completion(
        output=row.output,
        confidence=row.confidence if row.confidence is not None else 0.0,
        features=row.features,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cost=row.cost,
        latency_ms=row.latency_ms,
        error=row.error,
    )
