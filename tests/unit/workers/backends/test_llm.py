"""Options and completion assembly shared by the llamacpp and openai backends."""

from __future__ import annotations

import math

import pytest

from topics.errors import ConfigError
from workers.backends import create_backend
from workers.backends.llm import LLMOptions, Sample, choice_completion, generate_completion, parse_llm_options


def test_defaults_score_the_four_letters() -> None:
    opts = parse_llm_options("t", {"model": "m"}, ())
    assert (opts.mode, opts.choices, opts.temperature, opts.samples) == ("choice", ("A", "B", "C", "D"), 0.0, 1)
    assert opts.render("Q?") == "Q?"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "chat"}, "mode"),
        ({"prompt": "no placeholder"}, "prompt"),
        ({"choices": ["A"]}, "at least two"),
        ({"choices": "AB"}, "list of non-empty strings"),
        ({"temperature": -1}, "temperature"),
        ({"samples": 0}, "samples"),
        ({"max_tokens": 1.5}, "'max_tokens' must be int"),
        ({"price_per_input_token": float("nan")}, "price_per_input_token"),
        ({"colour": "blue"}, "'colour' is unknown"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_llm_options("t", options, ())


def test_backends_validate_their_options_without_loading_anything() -> None:
    with pytest.raises(ConfigError, match="'model' must name"):
        create_backend("llamacpp", "t", {})
    with pytest.raises(ConfigError, match="n_ctx"):
        create_backend("llamacpp", "t", {"model": "smollm2-135m", "n_ctx": 1})
    with pytest.raises(ConfigError, match="base_url"):
        create_backend("openai", "t", {"model": "m", "base_url": "localhost:8000"})
    with pytest.raises(ConfigError, match="endpoint"):
        create_backend("openai", "t", {"model": "m", "base_url": "http://x/v1", "endpoint": "embeddings"})


def test_cost_uses_token_prices_when_given_else_compute_time() -> None:
    assert LLMOptions(price_per_input_token=1e-6, price_per_output_token=2e-6).cost(100, 10, 5.0) == pytest.approx(
        1.2e-4
    )
    assert LLMOptions(price_per_cpu_second=1e-4).cost(100, 10, 2.0) == pytest.approx(2e-4)


def test_choice_completion_picks_the_best_option() -> None:
    completion = choice_completion(LLMOptions(), {"A": math.log(0.1), "B": math.log(0.6)}, 42, 0.5)
    assert completion.output == "B"
    assert completion.confidence == pytest.approx(0.6 / 0.7)
    assert (completion.tokens_in, completion.tokens_out, completion.latency_ms) == (42, 1, 500.0)
    assert completion.error is None


def test_choice_completion_without_mass_is_an_error_completion() -> None:
    completion = choice_completion(LLMOptions(), {"A": -math.inf, "B": -math.inf}, 3, 0.1)
    assert completion.error is not None and completion.confidence == 0.0


def test_one_sample_confidence_is_the_geometric_mean_token_probability() -> None:
    completion = generate_completion(LLMOptions(mode="generate"), [Sample(" Paris", (-0.2, -0.4))], 7, 0.1)
    assert completion.output == "Paris"
    assert completion.confidence == pytest.approx(math.exp(-0.3))
    assert "agreement" not in completion.features
    assert (completion.tokens_in, completion.tokens_out) == (7, 2)


def test_several_samples_answer_with_the_majority_and_their_agreement() -> None:
    samples = [Sample("Lyon", (-1.0,)), Sample("Paris", (-0.1,)), Sample("paris.", (-0.3, -0.2))]
    completion = generate_completion(LLMOptions(mode="generate", samples=3), samples, 5, 0.3)
    assert completion.output == "Paris"
    assert completion.confidence == pytest.approx(2 / 3)
    assert completion.features["agreement"] == pytest.approx(2 / 3)
    assert completion.features["logprob_mean"] == pytest.approx(-0.1)
    assert (completion.tokens_in, completion.tokens_out) == (15, 4)
