"""Query vectors of a trace's items, as the router computes them, cached on disk.

E5 takes a minute for 2,000 headlines on two cores and every fit and sweep needs the
vectors, so they are kept under ``$TIERFLOW_CACHE_DIR/embeddings`` keyed by the
embedding (its name and version) and the texts; the key changes whenever either does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import track

from infra.lab.table import TraceTable
from policies.features import query_vector
from workers.backends.assets.artifacts import cache_root
from workers.query_features import embedding, embedding_version

_MEMORY: dict[str, npt.NDArray[np.float64]] = {}
CHUNK = 64


def _key(texts: list[str], name: str) -> str:
    digest = hashlib.sha256(embedding_version(name).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()[:32]


def query_vectors(table: TraceTable, name: str, console: Console | None = None) -> npt.NDArray[np.float64]:
    """One query vector of embedding ``name`` per item of ``table`` (rows in item order); ``console``
    shows the embedding's progress."""
    texts = [rows[0].input for rows in table.rows]
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


def _save(path: Path, array: npt.NDArray[np.float32]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, array)
    partial.replace(path)
