"""Query vectors of a trace's items, as the router computes them, cached on disk.

E5 takes a minute for 2,000 headlines on two cores and every fit and sweep needs the
vectors, so they are kept under ``$TIERFLOW_CACHE_DIR/embeddings`` keyed by the
embedding (its name and version) and the texts; the key changes whenever either does.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import track

from infra.lab.table import TraceTable
from policies.features import query_vector, shared_prefix, strip_prefix
from workers.backends.assets.artifacts import cache_root
from workers.query_features import EMBED_CHARS, embedding, embedding_version

_MEMORY: dict[str, npt.NDArray[np.float64]] = {}
CHUNK = 64


def _key(texts: list[str], name: str) -> str:
    digest = hashlib.sha256(embedding_version(name).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()[:32]


def query_vectors(
    table: TraceTable, name: str, console: Console | None = None, prefix: str = ""
) -> npt.NDArray[np.float64]:
    """One query vector of embedding ``name`` per item of ``table`` (rows in item order), of the
    queries without the shared ``prefix``; ``console`` shows the embedding's progress."""
    texts = [strip_prefix(rows[0].input, prefix) for rows in table.rows]
    key = _key(texts, name)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_root() / "embeddings" / f"{key}.npy"
    if path.is_file():
        embedded = np.load(path)
    else:
        chunks: Iterable[int] = range(0, len(texts), CHUNK)
        if console is not None:
            chunks = track(chunks, f"embedding {len(texts)} queries with {name} (cached after)", console=console,
                           transient=True)  # fmt: skip
        embed = embedding(name)
        embedded = np.vstack([embed(texts[i : i + CHUNK]) for i in chunks])
        _save(path, embedded)
    vectors = np.vstack([query_vector(text, row) for text, row in zip(texts, embedded, strict=True)])
    _MEMORY[key] = vectors
    return vectors


def fitted_prefix(table: TraceTable, console: Console | None = None) -> str:
    """The prefix (nearly) every query of ``table`` shares, to strip before featurising; says so, and
    warns when the window the embedding reads is still the same for most queries."""
    texts = [rows[0].input for rows in table.rows]
    prefix = shared_prefix(texts)
    windows = Counter(strip_prefix(text, prefix)[:EMBED_CHARS] for text in texts)
    same = windows.most_common(1)[0][1] if windows else 0
    if console is not None and prefix:
        console.print(f"routers read the queries without the {len(prefix)} characters they all begin with")
    if console is not None and same > len(texts) / 2:
        console.print(f"[yellow]warning[/]: {same} of {len(texts)} queries look the same to the routers "
                      f"(their first {EMBED_CHARS} characters are equal): they can only route by length")  # fmt: skip
    return prefix


def _save(path: Path, array: npt.NDArray[np.float32]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, array)
    partial.replace(path)
