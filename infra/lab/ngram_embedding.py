"""Fit the projection of the ``ngram-256`` query embedding: ``python -m infra.lab.ngram_embedding``.

Latent semantic analysis: a truncated SVD of the sublinear TF-IDF of hashed word
unigrams and bigrams (``workers/query_features.py`` computes them the same way at
routing time), fitted on

* the sarcasm train split (the headline tiers' own training headlines; every trace
  samples the test split), and
* the MMLU questions outside the samples ``--exclude`` names (by default those of
  the README's MMLU traces), so no evaluated question shaped the projection.

Unsupervised: no label and no tier's answer is read. Writes ``workers/assets/ngram-256.npz``
(the IDF and the 16,384 x 256 projection, float16) and prints its sha256, which
``NGRAM_SHA256`` pins.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console

from policies.features import EMBEDDINGS
from workers.query_features import EMBED_CHARS, NGRAM_FILE, ngram_vectorizer, tfidf

DEFAULT_EXCLUDE = ("mmlu:1200:1", "mmlu:200:1", "mmlu:100:1")
"""``dataset:n:seed``: the samples of the README's MMLU traces (``tierflow trace ... --n 1200 --seed 1``, ...)."""


def corpus(exclude: Sequence[str]) -> list[str]:
    """The training texts: sarcasm train headlines, and MMLU questions outside the excluded samples."""
    from infra.datasets import load_items
    from workers.backends.assets.mmlu import load_questions
    from workers.backends.assets.sarcasm import train_items

    held_out: set[str] = set()
    for spec in exclude:
        dataset, n, seed = spec.split(":")
        held_out.update(item.id for item in load_items(dataset, int(n), int(seed)))
    return [h.text for h in train_items()] + [q.text for q in load_questions() if q.id not in held_out]


def fit_projection(texts: Sequence[str], dim: int, seed: int = 0) -> tuple[npt.NDArray[np.float32], ...]:
    """(idf, projection): the IDF of the hashed n-grams over ``texts`` and the top ``dim`` right singular vectors."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    counts = ngram_vectorizer().transform([text[:EMBED_CHARS] for text in texts])
    idf = TfidfTransformer(sublinear_tf=True).fit(counts).idf_.astype(np.float32)
    svd = TruncatedSVD(dim, random_state=seed).fit(tfidf(counts, idf))
    return idf, svd.components_.T.astype(np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exclude", action="append", metavar="DATASET:N:SEED", help="samples to leave out")
    parser.add_argument("--out", default=str(NGRAM_FILE), help=f"where to write it (default {NGRAM_FILE})")
    args = parser.parse_args(argv)
    texts = corpus(args.exclude or DEFAULT_EXCLUDE)
    idf, projection = fit_projection(texts, EMBEDDINGS["ngram-256"])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, idf=idf, projection=projection.astype(np.float16))
    Path(args.out).write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    Console().print(f"{args.out}: {len(texts)} texts, {len(buffer.getvalue()) / 1e6:.1f} MB, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
