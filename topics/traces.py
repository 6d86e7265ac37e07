"""The trace format: one JSON object per line, one line per item x model.

A trace records what every model of a portfolio answered on a sample of a data set,
with the confidence features policies read. ``tierflow trace`` writes it, the
``replay`` backend answers from it, and the policy lab fits and evaluates on it.

JSONL rather than Parquet: a trace is appended to batch by batch, so an interrupted
run resumes by skipping the (item, tier) pairs already present, and a partial last
line (a crash mid-write) is detected and dropped. The files stay small (a few MB
per thousand items) and readable with ``jq``; ``pandas.read_json(lines=True)`` or
``pyarrow.json`` turn one into a columnar table when needed.

Columns (every row has every column; ``features`` is a flat object of floats):

====================  =====================================================================
``item_id``           stable id of the item (the request id when streamed)
``dataset``           ``mmlu``, ``sarcasm``, ``synthetic``…
``category``          the item's category where the data set has one (MMLU subject)
``input``             the text sent to the model (before the tier's prompt template)
``label``             the gold answer
``tier``, ``model``   the portfolio tier and the model behind it
``source``            ``live`` (run by ``tierflow trace``) or ``recorded`` (joined from
                      published outputs, e.g. RouteLLM's GPT-4 MMLU correctness)
``output``            the answer (``?`` for a recorded wrong answer whose text is unknown)
``correct``           ``output`` equals ``label`` (recorded: as published)
``confidence``        the tier's headline confidence in [0, 1] (NaN-free; 0 on error), or
                      null where the source has none (``tierflow trace import``)
``features``          confidence features: ``max_prob``, ``margin``, ``entropy``,
                      ``option_mass``, ``logprob_mean``… (see ``workers.backends.confidence``)
``tokens_in``/``out`` token counts (recorded tiers: estimated at 4 characters per token)
``latency_ms``        time the model spent on this item
``cost``              cost of the call in USD (or the portfolio's unit)
``error``             null, or why the model gave no answer
``propensity``        the probability that this row was going to be recorded (default 1): a
                      trace built from the stream (``tierflow trace --from-kafka``) has 1 for
                      the tiers the live policy ran and the exploration share for the tiers
                      only an exploration copy ran; items may then lack tiers, and the lab
                      weighs what it estimates from such rows by their inverse
====================  =====================================================================
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from topics.errors import DataError


class TraceRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    item_id: str
    dataset: str
    input: str
    label: str
    tier: str
    model: str
    output: str
    correct: bool
    confidence: float | None = None
    """None where the source has no confidence (an imported table): the lab skips the methods that need one."""
    features: dict[str, float] = {}
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    cost: float = 0.0
    category: str = ""
    source: Literal["live", "recorded"] = "live"
    error: str | None = None
    propensity: float = 1.0
    """In (0, 1]: how likely this row was to be recorded (exploration; see the module docstring)."""


_DECODER = msgspec.json.Decoder(TraceRow)
_ENCODER = msgspec.json.Encoder()


def read_trace(path: str | Path) -> list[TraceRow]:
    """Every row of a trace; a malformed line is a DataError naming it, except a torn last line.

    A last line without its newline is what a run killed mid-write leaves: it is
    skipped (``tierflow trace`` will redo that batch when resumed).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # b"" when the file ends with a newline
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = _DECODER.decode(line)
        except msgspec.ValidationError as exc:
            raise DataError(f"{path}:{number}: not a trace row: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DataError(f"{path}:{number}: {_not_json(line, exc)}") from exc
        rows.append(_checked(row, path, number))
    if torn.strip():
        last = None
        with contextlib.suppress(msgspec.MsgspecError):
            last = _DECODER.decode(torn)
        if last is not None:  # whole after all, only its newline missing
            rows.append(_checked(last, path, len(lines) + 1))
    return rows


def _checked(row: TraceRow, path: str | Path, number: int) -> TraceRow:
    """``row``, unless its propensity is outside (0, 1]: the lab divides by it."""
    if not 0.0 < row.propensity <= 1.0:
        raise DataError(f"{path}:{number}: propensity is {row.propensity:g}: it must be in (0, 1]")
    return row


def _not_json(line: bytes, error: msgspec.DecodeError) -> str:
    """Why a line is not JSON, naming the field when it is a NaN or an infinity (which Python's
    ``json`` writes by default and JSON does not have)."""
    try:
        doc = json.loads(line)  # reads NaN and Infinity
    except ValueError:
        return f"not JSON: {error}"
    fields = doc.items() if isinstance(doc, dict) else ()
    for name, value in fields:
        inner = value.items() if isinstance(value, dict) else [("", value)]
        for key, number in inner:
            if isinstance(number, float) and not math.isfinite(number):
                where = f"{name}.{key}" if key else name
                return f"{where} is {number}: a trace needs finite numbers (JSON has no NaN or infinity)"
    return f"not JSON: {error}"


def write_trace(path: str | Path, rows: Iterable[TraceRow]) -> None:
    """Write a whole trace (replacing the file only once every row is written)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(b"".join(_ENCODER.encode(row) + b"\n" for row in rows))
    partial.replace(target)


def append_rows(path: str | Path, rows: Iterable[TraceRow]) -> None:
    """Append rows and flush them to disk (one write per batch keeps resumption exact)."""
    blob = b"".join(_ENCODER.encode(row) + b"\n" for row in rows)
    with Path(path).open("ab") as handle:
        handle.write(blob)
        handle.flush()


def truncate_torn_tail(path: Path) -> None:
    """Cut a partial last line (from a killed run) so appending starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def models_of(rows: Sequence[TraceRow]) -> list[str]:
    """The trace's tiers in first-appearance order (the portfolio's order when written by ``trace``)."""
    return list(dict.fromkeys(row.tier for row in rows))
