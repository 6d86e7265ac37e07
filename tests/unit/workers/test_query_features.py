"""The query embeddings routers read: the shipped n-gram projection, its pin, and the per-id cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies.features import EMBEDDINGS, TEXT_FEATURES
from topics.errors import ConfigError
from workers.query_features import (
    NGRAM_BUCKETS,
    NGRAM_FILE,
    NGRAM_SHA256,
    NgramEmbedding,
    QueryFeaturizer,
    embedding,
    ngram_vectorizer,
)

DIM = EMBEDDINGS["ngram-256"]


def test_the_shipped_projection_is_the_pinned_one_and_embeds_unit_vectors() -> None:
    assert NGRAM_SHA256, "the n-gram projection must be pinned by its sha256"
    embed = NgramEmbedding.load()
    vectors = embed(["scientists unveil doomsday clock of hair loss", "What is the capital of France?\nA. Paris"])
    assert vectors.shape == (2, DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_projection_groups_queries_by_what_they_are_about() -> None:
    """LSA, not noise: two questions on one subject are nearer each other than to a headline."""
    a, b, c = embedding("ngram-256")(
        [
            "Which enzyme unwinds the DNA double helix during replication?",
            "During DNA replication, which enzyme joins the Okazaki fragments?",
            "area man wins lottery, immediately loses ticket in couch",
        ]
    )
    assert float(a @ b) > float(a @ c) and float(a @ b) > float(b @ c)


def test_a_projection_other_than_the_pinned_one_is_refused_in_one_line(tmp_path: Path) -> None:
    forged = tmp_path / "ngram.npz"
    forged.write_bytes(NGRAM_FILE.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="sha256 differs"):
        NgramEmbedding.load(forged, NGRAM_SHA256)


def test_an_empty_batch_and_a_query_of_unknown_words_still_give_vectors() -> None:
    rng = np.random.default_rng(0)
    embed = NgramEmbedding(
        rng.random(NGRAM_BUCKETS, dtype=np.float32), rng.normal(size=(NGRAM_BUCKETS, DIM)).astype(np.float32)
    )
    assert embed([]).shape == (0, DIM)
    assert np.all(np.isfinite(embed(["", "!!!"])))
    assert ngram_vectorizer().transform(["x" * 10_000]).shape == (1, NGRAM_BUCKETS)


def test_unknown_embedding_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown query embedding 'glove'"):
        embedding("glove")


def test_featurizer_embeds_each_id_once_and_appends_the_text_features() -> None:
    featurizer = QueryFeaturizer("ngram-256", cache_size=2)
    first = featurizer.vectors([("r1", "a headline"), ("r2", "a question?")])
    assert [v.shape for v in first] == [(DIM + len(TEXT_FEATURES),)] * 2
    again = featurizer.vectors([("r1", "another text under the same id")])
    assert np.array_equal(again[0], first[0])  # a redelivered request costs nothing
    featurizer.vectors([("r3", "x"), ("r4", "y")])
    assert len(featurizer._cache) == 2
