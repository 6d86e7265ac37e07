"""Confidence features of LLM answers, computed the same way for every LLM backend.

Pure functions over log-probabilities, so the in-process llama.cpp backend and the
OpenAI-compatible HTTP backend produce identical features for identical model
outputs, and the policy lab can recompute them from a trace.

* Token features (free generation; the LM Cascades features of Gupta et al.): mean,
  min, sum and the 10/25/50/75/90% quantiles of the chosen tokens' log-probs.
* Option features (choice mode: a fixed set of answers such as ``A``-``D`` scored
  from the next-token distribution): the options' probabilities renormalised among
  themselves give ``max_prob``, ``margin`` (best minus second best) and ``entropy``
  (nats); ``option_mass`` is how much of the model's full next-token distribution
  falls on the options at all — a low mass means the model wanted to say
  something else, itself a sign of confusion.
* Sample agreement (n > 1 samples): the share of samples whose normalised answer
  equals the majority's.
* Semantic entropy (n > 1 samples; Kuhn et al.): the entropy (nats) of the
  distribution of the samples over meaning clusters. Here two answers mean the
  same when their normalised texts are equal (``normalise_answer``), the cheap
  stand-in for the paper's bidirectional-entailment clustering, exact for short
  answers such as a letter or a number. In choice mode the option distribution is
  read exactly rather than sampled, each option being its own cluster, so the
  option ``entropy`` above *is* its semantic entropy (the limit of the sampled
  estimate as n grows); no second feature is computed for it.
* Two-token self-assessment (AutoMix's ``verify_p``, Self-REF's ``self_ref``): the
  share P(yes) / (P(yes) + P(no)) of two answer tokens after a question the model
  is asked about its own answer (``binary_share``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

LOGPROB_QUANTILES: tuple[int, ...] = (10, 25, 50, 75, 90)
_SPACES = re.compile(r"\s+")
_EDGE_PUNCTUATION = ".,;:!?\"'()[]{}"


def log_softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Numerically stable log-softmax of one row of logits, in float64."""
    row = np.asarray(logits, dtype=np.float64)
    shifted = row - row.max()
    result: npt.NDArray[np.float64] = shifted - math.log(float(np.exp(shifted).sum()))
    return result


def logprob_features(token_logprobs: Sequence[float]) -> dict[str, float]:
    """Summary statistics of the generated tokens' log-probs; empty for no tokens."""
    values = np.asarray([v for v in token_logprobs if math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return {}
    features = {
        "logprob_mean": float(values.mean()),
        "logprob_min": float(values.min()),
        "logprob_sum": float(values.sum()),
    }
    for q, value in zip(LOGPROB_QUANTILES, np.percentile(values, LOGPROB_QUANTILES), strict=True):
        features[f"logprob_q{q}"] = float(value)
    return features


def option_features(option_logprobs: Mapping[str, float]) -> tuple[str, dict[str, float]]:
    """The most likely option and the choice-mode features, from each option's log-prob.

    ``option_logprobs`` are log-probs in the model's full next-token distribution
    (``-inf`` for an option the model gives no mass). Ties go to the earlier option.
    """
    if not option_logprobs:
        raise ValueError("no options to score")
    names = list(option_logprobs)
    logprobs = np.asarray([option_logprobs[n] for n in names], dtype=np.float64)
    if not np.isfinite(logprobs).any():
        raise ValueError("the model gives no probability to any option")
    top = float(logprobs.max())
    weights = np.exp(logprobs - top)
    probs = weights / weights.sum()
    order = np.argsort(-probs, kind="stable")
    best = float(probs[order[0]])
    second = float(probs[order[1]]) if len(order) > 1 else 0.0
    nonzero = probs[probs > 0]
    features = {
        "max_prob": best,
        "margin": best - second,
        "entropy": float(-(nonzero * np.log(nonzero)).sum()),
        "option_mass": float(math.exp(top) * weights.sum()),
    }
    return names[int(order[0])], features


def normalise_answer(text: str) -> str:
    """Lower-case, collapse whitespace and strip edge punctuation: ``" Paris."`` equals ``"paris"``."""
    return _SPACES.sub(" ", text).strip().strip(_EDGE_PUNCTUATION).strip().lower()


def semantic_entropy(outputs: Sequence[str], normalised: bool = False) -> float:
    """Entropy (nats) of the outputs' normalised-answer clusters: 0 when all agree, ``log n`` when all differ.

    ``normalised`` divides by ``log n`` (the maximum for n outputs), giving [0, 1]
    comparable across sample counts; one output has entropy 0 either way.
    """
    if not outputs:
        raise ValueError("no outputs")
    counts = np.asarray(list(Counter(normalise_answer(o) for o in outputs).values()), dtype=np.float64)
    shares = counts / counts.sum()
    entropy = float(-(shares * np.log(shares)).sum()) + 0.0  # + 0.0: no -0.0 for one cluster
    if normalised:
        return entropy / math.log(len(outputs)) if len(outputs) > 1 else 0.0
    return entropy


def binary_share(yes_logprob: float, no_logprob: float) -> float:
    """P(yes) / (P(yes) + P(no)) from two log-probs, stable for tiny probabilities; 0 when both are 0."""
    if yes_logprob == -math.inf:
        return 0.0
    if no_logprob == -math.inf:
        return 1.0
    return 1.0 / (1.0 + math.exp(min(700.0, no_logprob - yes_logprob)))


def agreement(outputs: Sequence[str]) -> tuple[int, float]:
    """Index of the first output of the majority answer, and the share of outputs that agree with it."""
    if not outputs:
        raise ValueError("no outputs")
    normalised = [normalise_answer(o) for o in outputs]
    majority, count = Counter(normalised).most_common(1)[0]
    return normalised.index(majority), count / len(outputs)
