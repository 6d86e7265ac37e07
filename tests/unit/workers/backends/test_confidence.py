"""Confidence features: the numbers every LLM backend reports, on hand-checkable inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.backends.confidence import (
    agreement,
    log_softmax,
    logprob_features,
    normalise_answer,
    option_features,
)


def test_log_softmax_is_a_distribution_even_for_huge_logits() -> None:
    logprobs = log_softmax(np.array([1000.0, 1000.0, -1000.0], dtype=np.float32))
    assert np.exp(logprobs).sum() == pytest.approx(1.0)
    assert logprobs[0] == pytest.approx(math.log(0.5))


def test_logprob_features_are_the_lm_cascades_statistics() -> None:
    features = logprob_features([-0.1, -2.0, -0.5, -1.0, -0.3])
    assert features["logprob_mean"] == pytest.approx(-0.78)
    assert features["logprob_min"] == -2.0
    assert features["logprob_sum"] == pytest.approx(-3.9)
    assert features["logprob_q50"] == pytest.approx(-0.5)
    assert features["logprob_q10"] <= features["logprob_q25"] <= features["logprob_q50"] <= features["logprob_q90"]
    assert logprob_features([]) == {}


def test_option_features_renormalise_over_the_options() -> None:
    best, features = option_features({"A": math.log(0.2), "B": math.log(0.4), "C": math.log(0.1), "D": -math.inf})
    assert best == "B"
    assert features["max_prob"] == pytest.approx(4 / 7)
    assert features["margin"] == pytest.approx(2 / 7)
    probs = np.array([2, 4, 1]) / 7
    assert features["entropy"] == pytest.approx(-(probs * np.log(probs)).sum())
    assert features["option_mass"] == pytest.approx(0.7)


def test_option_features_refuse_options_without_any_mass() -> None:
    with pytest.raises(ValueError, match="no probability"):
        option_features({"A": -math.inf, "B": -math.inf})


@given(st.lists(st.floats(min_value=-50, max_value=0), min_size=2, max_size=6))
def test_option_probabilities_always_form_a_distribution(logprobs: list[float]) -> None:
    options = {chr(65 + i): lp for i, lp in enumerate(logprobs)}
    best, features = option_features(options)
    assert options[best] == pytest.approx(max(logprobs), abs=1e-12)
    assert 1 / len(options) - 1e-9 <= features["max_prob"] <= 1.0 + 1e-9
    assert 0.0 <= features["margin"] <= features["max_prob"] + 1e-9
    assert 0.0 <= features["entropy"] <= math.log(len(options)) + 1e-9


def test_agreement_is_the_majority_share_of_normalised_answers() -> None:
    assert agreement(["Paris.", " paris", "Lyon", "PARIS"]) == (0, 0.75)
    assert agreement(["x"]) == (0, 1.0)
    assert normalise_answer("  The   answer: (B).  ") == "the answer: (b"

