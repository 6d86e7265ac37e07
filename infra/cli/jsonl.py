"""What every JSONL-reading command shares: numbered lines, one JSON object per line, one error line per bad line.

``tierflow send`` (requests) and ``tierflow feedback`` (labels) both check every line before
anything is produced, name each bad line by file and line number, and send nothing when one is
bad (a file is one batch: sending part of it leaves the user to work out which part went).
"""

from __future__ import annotations

import codecs
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from infra.cli.common import note

T = TypeVar("T")

MAX_REPORTED = 20
"""Bad lines named one by one; past this a count stands for the rest (a wrong file is not 10⁶ lines)."""


class BadLine(ValueError):
    """One input line is refused; the message names the field (the caller adds the line)."""


def numbered_lines(source: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of every line that is not blank; a UTF-8 BOM on the first line is dropped."""
    for number, raw in enumerate(source, start=1):
        line = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
        if line.strip():
            yield number, line


def json_object(line: bytes, expected: str) -> dict[str, Any]:
    """The JSON object one line holds; :class:`BadLine` when it is not UTF-8, not JSON or not an object.

    ``expected`` describes the object in the error (``'a JSON object with a string "input"'``).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})") from None
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BadLine("not JSON the client reads (nested too deeply)") from None
    if not isinstance(item, dict):
        raise BadLine(f"each line must be {expected}, got {kind(item)}")
    return item


def read_input(path: str, read: Callable[[Iterable[bytes], str], T]) -> T:
    """``read(lines, name)`` over the file at ``path`` (``-``: stdin); a file that cannot be opened is one line."""
    from topics.errors import DataError

    if path == "-":
        return read(sys.stdin.buffer, "stdin")
    try:
        with Path(path).open("rb") as handle:
            return read(handle, path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc


def optional_string(item: dict[str, Any], key: str) -> str | None:
    """``item[key]`` when it is a string, ``None`` when absent or null; anything else is refused, not str()-ed."""
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadLine(f"{key} must be a string, got {kind(value)}")
    return value


def optional_number(item: dict[str, Any], key: str, what: str = "a number") -> float | None:
    """``item[key]`` as a finite float, ``None`` when absent or null; JSON's NaN and Infinity parse, so
    finiteness is checked, not assumed (``what`` names the number in the error)."""
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadLine(f"{key} must be {what}, got {kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf  # an integer too long for a float
    if not math.isfinite(number):
        raise BadLine(f"{key} must be a finite number, got {number}")
    return number


def kind(value: object) -> str:
    """What a JSON value is, in JSON's words: errors name what the line holds, not Python types."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return "a list" if isinstance(value, list) else "an object"


def report_bad_lines(problems: list[str], name: str) -> None:
    """One ``error:`` line per bad line (one line in all when only one is bad)."""
    for problem in problems[:MAX_REPORTED]:
        note(f"error: {problem}")
    if len(problems) > MAX_REPORTED:
        note(f"error: {len(problems) - MAX_REPORTED} more bad lines not shown")
    if len(problems) > 1:
        note(f"error: {len(problems)} bad lines in {name}; nothing was sent")
