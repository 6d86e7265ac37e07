"""``tierflow trace``: run every tier of a portfolio on a seeded sample and record what each said.

The tiers run in process, one after the other (one model in memory at a time),
in batches of the tier's ``batch_size``; every batch is appended to the trace and
flushed before the next starts. Running the same command again resumes: pairs
(item, tier) already in the file are skipped, and a line torn by a kill is cut.
Recorded tiers (backend ``recorded``: RouteLLM's Mixtral/GPT-4 answers to the
same MMLU questions) are joined the same way, their rows marked ``recorded``; an
``optional`` tier whose data this machine lacks is left out, saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from infra.config import TierConfig, load_config_or_portfolio
from infra.datasets import Item, load_items
from topics.errors import ConfigError, DataError
from topics.traces import TraceRow, append_rows, read_trace, truncate_torn_tail
from workers.backends.base import Completion, Query, create_backend
from workers.backends.confidence import normalise_answer

_LEADING_LETTER = re.compile(r"^\W*([A-Za-z])\b")


@dataclass(frozen=True)
class TraceOptions:
    portfolio: str
    """A built-in portfolio name or a config file path."""
    dataset: str = ""
    """Default: the portfolio's data set."""
    n: int = 100
    seed: int = 0
    out: str = "trace.jsonl"
    threads: int = 0
    """Override ``n_threads`` of llamacpp tiers (0: keep the portfolio's). Tiers run one at a time
    here, so each may use every core, unlike in the pipeline where they share them."""
    verify: bool = False
    """Turn on the LLM tiers' self-verification (``verify_p``, for AutoMix)."""


def grade(output: str, label: str) -> bool:
    """Whether ``output`` answers ``label``: equal when normalised, or, for a one-letter
    label (multiple choice), a free-text answer that starts with that letter (``"B. Paris"``)."""
    if normalise_answer(output) == normalise_answer(label):
        return True
    if len(label) == 1 and label.isalpha():
        match = _LEADING_LETTER.match(output)
        return match is not None and match.group(1).upper() == label.upper()
    return False


def _row(item: Item, dataset: str, tier: TierConfig, model: str, completion: Completion) -> TraceRow:
    recorded = tier.backend == "recorded"
    features = {k: float(v) for k, v in completion.features.items() if math.isfinite(v)}
    confidence = completion.confidence if math.isfinite(completion.confidence) else 0.0
    return TraceRow(
        item_id=item.id,
        dataset=dataset,
        input=item.text,
        label=item.label,
        tier=tier.name,
        model=model,
        output=completion.output,
        correct=completion.error is None and grade(completion.output, item.label),
        confidence=min(1.0, max(0.0, confidence)),
        features=features,
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
        latency_ms=completion.latency_ms,
        cost=completion.cost,
        category=item.category,
        source="recorded" if recorded else "live",
        error=completion.error,
    )


def _tuned(tier: TierConfig, threads: int, verify: bool) -> TierConfig:
    """The tier with the trace's overrides: llama.cpp threads, LLM self-verification."""
    options = dict(tier.options)
    if threads > 0 and tier.backend == "llamacpp":
        options["n_threads"] = threads
    if verify and tier.backend in ("llamacpp", "openai"):
        options["verify"] = True
    return dataclasses.replace(tier, options=options)


def _existing(out: Path, dataset: str) -> list[TraceRow]:
    if not out.exists():
        return []
    truncate_torn_tail(out)
    rows = read_trace(out)
    other = {row.dataset for row in rows} - {dataset}
    if other:
        raise DataError(f"{out} holds a trace of {', '.join(sorted(other))}, not {dataset}: choose another --out")
    return rows


async def _trace_tier(
    tier: TierConfig, todo: Sequence[Item], dataset: str, out: Path, progress: Progress, bar: Any
) -> None:
    backend = create_backend(tier.backend, tier.name, tier.options)
    progress.update(bar, description=f"loading {tier.name}")
    try:
        await asyncio.to_thread(backend.load)
    except (ConfigError, DataError) as exc:
        if not tier.optional:
            raise
        progress.console.print(f"tier {tier.name} left out: {exc}")
        progress.advance(bar, len(todo))
        return
    progress.update(bar, description=f"tier {tier.name}")
    for start in range(0, len(todo), tier.batch_size):
        chunk = todo[start : start + tier.batch_size]
        completions = await backend.infer([Query(item.id, item.text) for item in chunk])
        if len(completions) != len(chunk):
            raise DataError(f"tier {tier.name} returned {len(completions)} answers for {len(chunk)} items")
        rows = [_row(i, dataset, tier, backend.model_name, c) for i, c in zip(chunk, completions, strict=True)]
        append_rows(out, rows)
        progress.advance(bar, len(chunk))
    await backend.close()


def run_trace(options: TraceOptions, console: Console) -> list[TraceRow]:
    """Write (or complete) the trace; return all of its rows."""
    config = load_config_or_portfolio(options.portfolio)
    dataset = options.dataset or config.dataset
    if not dataset:
        raise ConfigError(f"portfolio {options.portfolio} names no dataset: pass --dataset")
    if options.n < 1:
        raise ConfigError("--n must be >= 1")
    items = load_items(dataset, options.n, options.seed)
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(row.item_id, row.tier) for row in _existing(out, dataset)}
    tiers = [_tuned(tier, options.threads, options.verify) for tier in config.tiers]
    plan = [(tier, [item for item in items if (item.id, tier.name) not in done]) for tier in tiers]
    remaining = sum(len(todo) for _, todo in plan)
    if remaining < len(items) * len(config.tiers):
        console.print(f"resuming {out}: {len(items) * len(config.tiers) - remaining} item x tier pairs already there")
    started = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("tracing", total=remaining)
        for tier, todo in plan:
            if todo:
                asyncio.run(_trace_tier(tier, todo, dataset, out, progress, bar))
    rows = read_trace(out)
    console.print(f"{out}: {len(rows)} rows ({time.monotonic() - started:.0f}s)")
    sampled = {item.id for item in items}
    console.print(summary_table([r for r in rows if r.item_id in sampled]))
    return rows


def summary_table(rows: Sequence[TraceRow]) -> Table:
    """Per tier: items, accuracy, mean confidence, errors, latency and cost."""
    table = Table(title="trace summary")
    for column in ("tier", "model", "items", "accuracy", "mean conf", "errors", "p50 ms", "cost / item"):
        table.add_column(column, justify="left" if column in ("tier", "model") else "right")
    by_tier: dict[str, list[TraceRow]] = {}
    for row in rows:
        by_tier.setdefault(row.tier, []).append(row)
    for tier, group in by_tier.items():
        latencies = sorted(r.latency_ms for r in group)
        table.add_row(
            tier,
            group[0].model,
            str(len(group)),
            f"{sum(r.correct for r in group) / len(group):.1%}",
            f"{sum(r.confidence or 0.0 for r in group) / len(group):.2f}",
            str(sum(r.error is not None for r in group)),
            f"{latencies[len(latencies) // 2]:.1f}",
            f"{sum(r.cost for r in group) / len(group):.2e}",
        )
    return table
