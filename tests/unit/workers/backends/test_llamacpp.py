"""The llamacpp backend on a real model: SmolLM2-135M (98 MB, fetched once into the cache)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from workers.backends import create_backend
from workers.backends.base import Query

pytestmark = pytest.mark.llm

QUESTION = "What is the capital of France?\nA. Berlin\nB. Madrid\nC. Paris\nD. Rome\nAnswer:"


@pytest.fixture(scope="module")
def choice() -> Any:
    backend = create_backend("llamacpp", "small", {"model": "smollm2-135m", "n_threads": 2})
    backend.load()
    return backend


@pytest.fixture(scope="module")
def sampler() -> Any:
    options = {"model": "smollm2-135m", "mode": "generate", "max_tokens": 12, "temperature": 0.9, "samples": 3}
    backend = create_backend("llamacpp", "small", options | {"stop": ["\n"], "n_threads": 2})
    backend.load()
    return backend


def test_choice_probabilities_form_a_distribution(choice: Any) -> None:
    logprobs = choice.option_logprobs(QUESTION)
    assert set(logprobs) == {"A", "B", "C", "D"}
    probs = {k: math.exp(v) for k, v in logprobs.items()}
    assert all(0.0 < p < 1.0 for p in probs.values())
    mass = sum(probs.values())
    assert mass <= 1.0 + 1e-9  # the options are part of the full next-token distribution

    [completion] = asyncio.run(choice.infer([Query("q", QUESTION)]))
    assert completion.error is None
    assert completion.output == max(probs, key=lambda k: probs[k])
    assert completion.confidence == pytest.approx(max(probs.values()) / mass)
    assert completion.features["option_mass"] == pytest.approx(mass)
    assert 0.25 <= completion.features["max_prob"] <= 1.0
    assert 0.0 <= completion.features["entropy"] <= math.log(4) + 1e-9
    assert completion.tokens_in > 10 and completion.tokens_out == 1
    assert completion.cost > 0 and completion.latency_ms > 0


def test_generation_returns_finite_token_logprobs_and_agreement(sampler: Any) -> None:
    [completion] = asyncio.run(sampler.infer([Query("q1", "The capital of France is")]))
    assert completion.error is None and completion.output
    features = completion.features
    for key in ("logprob_mean", "logprob_min", "logprob_q10", "logprob_q50", "logprob_q90"):
        assert math.isfinite(features[key]) and features[key] <= 0.0
    assert features["logprob_min"] <= features["logprob_q10"] <= features["logprob_q50"] <= features["logprob_q90"]
    assert features["agreement"] in (1 / 3, 2 / 3, 1.0)
    assert completion.confidence == features["agreement"]
    assert 3 <= completion.tokens_out <= 36  # three samples of at most 12 tokens


def test_sampling_is_seeded_per_request(sampler: Any) -> None:
    first = asyncio.run(sampler.infer([Query("same-id", "Once upon a time")]))
    again = asyncio.run(sampler.infer([Query("same-id", "Once upon a time")]))
    assert (first[0].output, dict(first[0].features)) == (again[0].output, dict(again[0].features))


def test_a_prompt_longer_than_the_context_is_an_error_answer() -> None:
    backend = create_backend("llamacpp", "small", {"model": "smollm2-135m", "n_ctx": 64})
    backend.load()
    [completion] = asyncio.run(backend.infer([Query("long", "word " * 200)]))
    assert completion.error is not None and "does not fit" in completion.error
