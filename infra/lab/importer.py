"""``tierflow trace import``: a trace from a table of per-model outcomes the user already has.

A public benchmark or a team's own logs usually come as one table: wide (one row per item,
a column per model, as RouteLLM's MMLU files: ``prompt, gpt-4-1106-preview, …``) or long
(one row per item and model). An :class:`ImportMap` says which columns hold what; column
names may contain ``{model}``, so one entry covers every model of a wide table::

    layout = "wide"
    input = "prompt"
    correct = "{model}"            # a bool, or a score counted correct at or above correct_at
    models = ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    [prices]                       # per call, where the table has no cost column
    "gpt-4-1106-preview" = 0.0124

Every value is checked where it is read: a missing column, a value that is not a bool or a
finite number, a NaN or an infinity, or a second row for one (item, model) is a
:class:`~topics.errors.DataError` naming the row and the field, in one line. Confidence is
optional (and so are confidence features, ``[features]``: name = column): without a confidence
the lab runs the methods that do not decide on it and skips the others
(``Method.needs_confidence``). Tier names are the model names made safe for topics
(``gpt-4-1106-preview``; ``mistralai/Mixtral-8x7B-Instruct-v0.1`` becomes
``mistralai-Mixtral-8x7B-Instruct-v0_1``) unless ``[tiers]`` names them.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from topics.errors import ConfigError, DataError
from topics.names import check_name
from topics.traces import TraceRow

Layout = Literal["wide", "long"]
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
_KEYS = {
    "layout", "id", "input", "category", "dataset", "model", "models", "correct", "correct_at",
    "cost", "confidence", "tokens", "prices", "token_prices", "tiers", "features",
}  # fmt: skip


@dataclass(frozen=True)
class ImportMap:
    """Which column holds what (``{model}`` in a name stands for each model of a wide table)."""

    input: str
    correct: str
    layout: Layout = "wide"
    models: tuple[str, ...] = ()
    """Wide: the models, each with its own columns. Long: the models to keep (default: all)."""
    model: str = "model"
    """Long: the column naming the model of each row."""
    id: str = ""
    """The item id column; default: the row number (wide) or the input text (long)."""
    category: str = ""
    dataset: str = "imported"
    correct_at: float = 0.5
    """A numeric ``correct`` (a score) counts as correct at or above this."""
    cost: str = ""
    confidence: str = ""
    tokens: str = ""
    """A token count column, priced by ``token_prices`` (per million tokens)."""
    prices: Mapping[str, float] = field(default_factory=dict)
    """Cost per call by model, where there is no cost column."""
    token_prices: Mapping[str, float] = field(default_factory=dict)
    tiers: Mapping[str, str] = field(default_factory=dict)
    """Tier name by model (default: the model name made safe)."""
    features: Mapping[str, str] = field(default_factory=dict)
    """Confidence features by name (``max_prob``, ``margin``…): the column of each, finite numbers."""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "the import map") -> ImportMap:
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS))}")
        for required in ("input", "correct"):
            if not doc.get(required):
                raise ConfigError(f"{where}: {required!r} is required (the column with the {required})")
        layout = doc.get("layout", "wide")
        if layout not in ("wide", "long"):
            raise ConfigError(f"{where}: layout must be 'wide' or 'long', got {layout!r}")
        models = tuple(str(m) for m in doc.get("models", ()))
        if layout == "wide" and not models:
            raise ConfigError(f"{where}: a wide table needs models = [...] (the models its columns are for)")
        numbers = {k: _prices(doc.get(k, {}), f"{where}: {k}") for k in ("prices", "token_prices")}
        try:
            return cls(
                input=str(doc["input"]),
                correct=str(doc["correct"]),
                layout=layout,
                models=models,
                model=str(doc.get("model", "model")),
                id=str(doc.get("id", "")),
                category=str(doc.get("category", "")),
                dataset=str(doc.get("dataset", "imported")),
                correct_at=float(doc.get("correct_at", 0.5)),
                cost=str(doc.get("cost", "")),
                confidence=str(doc.get("confidence", "")),
                tokens=str(doc.get("tokens", "")),
                prices=numbers["prices"],
                token_prices=numbers["token_prices"],
                tiers={str(k): check_name("tier", str(v)) for k, v in dict(doc.get("tiers", {})).items()},
                features={str(k): str(v) for k, v in dict(doc.get("features", {})).items()},
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def tier_of(self, model: str) -> str:
        """The tier name of ``model``: the map's ``[tiers]`` entry, else the model name made safe for topics."""
        name = self.tiers.get(model) or re.sub(r"[^A-Za-z0-9_-]", "-", model.replace(".", "_")).strip("-_")[:64]
        if not name:
            raise ConfigError(f"model {model!r} makes no tier name: give it one in the map's [tiers]")
        return name


def read_map(path: str) -> dict[str, Any]:
    """A map file's keys, for :meth:`ImportMap.from_dict` (after the command line's overrides)."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None


def summary_table(rows: Sequence[TraceRow]) -> Table:
    """What was imported, per tier: items, accuracy, mean cost, and whether it has confidences."""
    table = Table()
    for name in ("tier", "model", "items", "accuracy", "mean cost", "confidence"):
        table.add_column(name, justify="right" if name in ("items", "accuracy", "mean cost") else "left")
    by_tier: dict[str, list[TraceRow]] = {}
    for row in rows:
        by_tier.setdefault(row.tier, []).append(row)
    for tier, group in by_tier.items():
        accuracy = sum(r.correct for r in group) / len(group)
        cost = sum(r.cost for r in group) / len(group)
        confidence = "yes" if all(r.confidence is not None for r in group) else "none"
        table.add_row(tier, group[0].model, str(len(group)), f"{accuracy:.1%}", f"{cost:.4g}", confidence)
    return table


def _prices(raw: object, where: str) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table of model = number")
    out = {}
    for model, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}.{model} must be a finite number >= 0, got {value!r}")
        out[str(model)] = float(value)
    return out


def read_table(path: str) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The table's columns and its rows (CSV, JSONL or Parquet, by the file's suffix)."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise DataError(f"cannot read table {path}: no such file")
    if suffix == ".csv":
        csv.field_size_limit(sys.maxsize)  # recorded responses can be long
        with Path(path).open(newline="", encoding="utf-8") as handle:
            columns = next(csv.reader(handle), [])
        return columns, _csv_rows(path)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path)
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError("reading Parquet needs pyarrow: pip install pyarrow") from None
        table = pq.read_table(path)
        return list(table.column_names), iter(table.to_pylist())
    raise DataError(f"{path}: a table must be .csv, .jsonl or .parquet, not {suffix or 'no suffix'}")


def _csv_rows(path: str) -> Iterator[dict[str, Any]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def _jsonl(path: str) -> tuple[list[str], Iterator[dict[str, Any]]]:
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)  # reads NaN and Infinity too: the row check names them
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} row {number}: not JSON: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise DataError(f"{path} row {number}: not a JSON object")
        rows.append(doc)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return columns, iter(rows)


def import_table(path: str, mapping: ImportMap) -> list[TraceRow]:
    """Every (item, model) outcome of the table as trace rows, checked."""
    columns, rows = read_table(path)
    _check_columns(path, columns, mapping)
    out: list[TraceRow] = []
    seen: dict[tuple[str, str], int] = {}
    tiers: dict[str, str] = {}
    by_tier: dict[str, str] = {}
    wanted = set(mapping.models)
    for number, row in enumerate(rows, start=1):
        where = f"{path} row {number}"
        if mapping.layout == "wide":
            pairs = [(model, _columns(mapping, model)) for model in mapping.models]
        else:
            model = _text(row, mapping.model, where)
            if wanted and model not in wanted:
                continue
            pairs = [(model, _columns(mapping, "{model}"))]
        text = _text(row, mapping.input, where)
        item = _text(row, mapping.id, where) if mapping.id else (str(number) if mapping.layout == "wide" else text)
        for model, names in pairs:
            if model not in tiers:
                tiers[model] = mapping.tier_of(model)
            tier = tiers[model]
            if (other := by_tier.setdefault(tier, model)) != model:
                raise ConfigError(f"models {other!r} and {model!r} both make tier {tier!r}: name them in [tiers]")
            key = (item, model)
            if key in seen:
                raise DataError(f"{where}: a second row for item {item!r} and model {model!r} (first: row {seen[key]})")
            seen[key] = number
            out.append(_trace_row(row, names, mapping, (model, tier), item, text, where))
    if not out:
        raise DataError(f"{path}: no rows to import")
    return _cheapest_first(out)


def _cheapest_first(rows: list[TraceRow]) -> list[TraceRow]:
    """The rows with the tiers in ladder order, cheapest first (the order a trace's tiers are read in)."""
    costs: dict[str, list[float]] = {}
    for row in rows:
        costs.setdefault(row.tier, []).append(row.cost)
    rank = {tier: i for i, tier in enumerate(sorted(costs, key=lambda t: sum(costs[t]) / len(costs[t])))}
    items = {item: i for i, item in enumerate(dict.fromkeys(row.item_id for row in rows))}
    return sorted(rows, key=lambda row: (items[row.item_id], rank[row.tier]))


def _columns(mapping: ImportMap, model: str) -> dict[str, str]:
    """The column of each per-model field for ``model`` (``{model}`` in a name replaced; "" when unmapped)."""
    fields = {what: getattr(mapping, what) for what in ("correct", "cost", "confidence", "tokens")}
    fields |= {f"features.{name}": column for name, column in mapping.features.items()}
    return {what: column.replace("{model}", model) for what, column in fields.items()}


def _check_columns(path: str, columns: Sequence[str], mapping: ImportMap) -> None:
    """Every column the map names is in the table: a typo is said once, not on every row."""
    named = [(what, getattr(mapping, what)) for what in ("input", "id", "category")]
    if mapping.layout == "long":
        named += [("model", mapping.model), *_columns(mapping, "{model}").items()]
    else:
        named += [(f"{what} of {m}", column) for m in mapping.models for what, column in _columns(mapping, m).items()]
    for what, column in named:
        if column and column not in columns:
            shown = ", ".join(columns[:8]) + (", …" if len(columns) > 8 else "")
            raise DataError(f"{path}: no column {column!r} ({what}); the table has: {shown}")


def _trace_row(
    row: Mapping[str, Any],
    names: Mapping[str, str],
    mapping: ImportMap,
    model_tier: tuple[str, str],
    item: str,
    text: str,
    where: str,
) -> TraceRow:
    model, tier = model_tier
    correct = _correct(row, names["correct"], mapping.correct_at, where)
    if names["cost"]:
        cost = _number(row, names["cost"], where, low=0.0)
    elif names["tokens"] and model in mapping.token_prices:
        cost = _number(row, names["tokens"], where, low=0.0) * mapping.token_prices[model] / 1e6
    elif model in mapping.prices:
        cost = mapping.prices[model]
    else:
        raise DataError(f"{where}: no cost for model {model!r}: map a cost column, or give [prices] or [token_prices]")
    confidence = _number(row, names["confidence"], where, low=0.0, high=1.0) if names["confidence"] else None
    features = {
        what.removeprefix("features."): _number(row, column, where, low=-math.inf)
        for what, column in names.items()
        if what.startswith("features.")
    }
    return TraceRow(
        item_id=item,
        dataset=mapping.dataset,
        input=text,
        label="",
        tier=tier,
        model=model,
        output="",
        correct=correct,
        confidence=confidence,
        features=features,
        cost=cost,
        category=_text(row, mapping.category, where) if mapping.category else "",
        source="recorded",
    )


def _value(row: Mapping[str, Any], column: str, where: str) -> Any:
    value = row.get(column)
    if value is None or value == "":
        raise DataError(f"{where}: {column} is empty")
    return value


def _text(row: Mapping[str, Any], column: str, where: str) -> str:
    return str(_value(row, column, where))


def _number(row: Mapping[str, Any], column: str, where: str, low: float, high: float = math.inf) -> float:
    value = _value(row, column, where)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise DataError(f"{where}: {column} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {column} is {value!r}: a trace needs finite numbers")
    if not low <= number <= high:
        raise DataError(f"{where}: {column} is {number:g}, outside [{low:g}, {high:g}]")
    return number


def _correct(row: Mapping[str, Any], column: str, at: float, where: str) -> bool:
    value = _value(row, column, where)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return _number(row, column, where, low=-math.inf) >= at
