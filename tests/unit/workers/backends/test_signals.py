"""Answer-side signals: semantic entropy over samples and the yes/no probes (``verify``, ``self_ref``).

The pure parts run everywhere; the last tests run SmolLM2-135M (``llm`` marker, as
in ``test_llamacpp.py``) and check that ``self_ref`` is exactly the share read from
the model's own next-token distribution after the confidence question.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from topics.errors import ConfigError
from workers.backends import create_backend
from workers.backends.base import Completion, Query
from workers.backends.confidence import binary_share, semantic_entropy
from workers.backends.llm import (
    SELF_REF_PROMPT,
    VERIFY_PROBE,
    YES_NO,
    LLMOptions,
    Probe,
    Sample,
    generate_completion,
    parse_llm_options,
    with_probe,
)

QUESTION = "What is the capital of France?\nA. Berlin\nB. Madrid\nC. Paris\nD. Rome\nAnswer:"


def test_one_cluster_has_zero_semantic_entropy() -> None:
    assert semantic_entropy(["Paris"] * 5) == 0.0
    assert semantic_entropy(["x"]) == 0.0
    assert semantic_entropy(["x"], normalised=True) == 0.0


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_n_distinct_answers_have_log_n_semantic_entropy(n: int) -> None:
    outputs = [f"answer {i}" for i in range(n)]
    assert semantic_entropy(outputs) == pytest.approx(math.log(n))
    assert semantic_entropy(outputs, normalised=True) == pytest.approx(1.0)


def test_normalisation_merges_equivalent_answers() -> None:
    assert semantic_entropy(["A.", "a", " A ", "(a)"]) == 0.0
    two_to_one = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    assert semantic_entropy(["A.", "a", "B"]) == pytest.approx(two_to_one)


def test_semantic_entropy_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no outputs"):
        semantic_entropy([])


def test_generate_mode_reports_semantic_entropy_only_with_several_samples() -> None:
    opts = LLMOptions(mode="generate", samples=3)
    samples = [Sample("B.", (-0.1,)), Sample(" b", (-0.2,)), Sample("C", (-0.3,))]
    completion = generate_completion(opts, samples, 5, 0.1)
    assert completion.features["semantic_entropy"] == pytest.approx(semantic_entropy(["B.", " b", "C"]))
    one = generate_completion(LLMOptions(mode="generate"), samples[:1], 5, 0.1)
    assert "semantic_entropy" not in one.features


def test_binary_share_is_the_renormalised_yes_probability() -> None:
    assert binary_share(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert binary_share(-1000.0, -1001.0) == pytest.approx(1 / (1 + math.exp(-1.0)))  # both underflow exp()
    assert binary_share(-math.inf, -2.0) == 0.0
    assert binary_share(-2.0, -math.inf) == 1.0
    assert binary_share(-math.inf, -math.inf) == 0.0


def test_self_ref_options_default_to_a_prompted_yes_no_question() -> None:
    opts = parse_llm_options("t", {"self_ref": True}, ())
    assert opts.probes() == (Probe("self_ref", SELF_REF_PROMPT, YES_NO),)
    both = parse_llm_options("t", {"verify": True, "self_ref": True, "self_ref_tokens": [" Sure", " Unsure"]}, ())
    assert [p.feature for p in both.probes()] == ["verify_p", "self_ref"]
    assert both.probes()[1].tokens == (" Sure", " Unsure")
    assert parse_llm_options("t", {}, ()).probes() == ()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"self_ref": "yes"}, "'self_ref' must be true or false"),
        ({"self_ref_prompt": "no answer field"}, "self_ref_prompt"),
        ({"self_ref_tokens": [" Yes"]}, "self_ref_tokens"),
        ({"self_ref_tokens": [" Yes", " Yes"]}, "self_ref_tokens"),
    ],
)
def test_bad_self_ref_options_name_the_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_llm_options("t", options, ())


def test_a_probe_fills_prompt_and_answer_once_leaving_braces_alone() -> None:
    probe = Probe("self_ref", "{prompt} {answer}\nSure?", YES_NO)
    assert probe.text("Q {answer}?", "x{prompt}") == "Q {answer}? x{prompt}\nSure?"
    assert VERIFY_PROBE.text("Q", "A") == "Q A\n\nIs the answer above correct? Reply Yes or No.\nReply:"


def test_with_probe_adds_the_feature_and_the_probes_cost() -> None:
    opts = LLMOptions(price_per_input_token=1.0, price_per_output_token=10.0)
    completion = Completion("A", 0.9, tokens_in=10, tokens_out=1, cost=20.0, latency_ms=5.0)
    probe = Probe("self_ref", SELF_REF_PROMPT, (" Sure", " Unsure"))
    probed = with_probe(opts, completion, probe, {" Sure": math.log(0.2), " Unsure": math.log(0.6)}, 15, 0.5)
    assert probed.features["self_ref"] == pytest.approx(0.25)
    assert (probed.tokens_in, probed.tokens_out, probed.cost, probed.latency_ms) == (25, 2, 45.0, 500.0)
    assert (probed.output, probed.confidence) == ("A", 0.9)


# --- SmolLM2-135M ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probed() -> Any:
    backend = create_backend(
        "llamacpp", "small", {"model": "smollm2-135m", "n_threads": 2, "verify": True, "self_ref": True}
    )
    backend.load()
    return backend


def _fresh_share(backend: Any, probe: Probe, text: str, answer: str) -> float:
    """The probe's share from a from-scratch evaluation of its question (no cached prefix)."""
    opts = backend.llm_options
    tokens = backend._prompt_tokens_raw(probe.text(opts.render(text), answer))
    logprobs = backend._next_logprobs(tokens, reset=True)
    yes, no = (math.exp(float(logprobs[backend._first_token(t)])) for t in probe.tokens)
    return yes / (yes + no)


@pytest.mark.llm
def test_self_ref_is_the_models_own_yes_no_share(probed: Any) -> None:
    [completion] = asyncio.run(probed.infer([Query("q", QUESTION)]))
    assert completion.error is None
    features = completion.features
    assert 0.0 <= features["self_ref"] <= 1.0 and 0.0 <= features["verify_p"] <= 1.0
    [verify, self_ref] = probed.llm_options.probes()
    with probed._lock:
        assert features["self_ref"] == pytest.approx(
            _fresh_share(probed, self_ref, QUESTION, completion.output), abs=1e-4
        )
        assert features["verify_p"] == pytest.approx(
            _fresh_share(probed, verify, QUESTION, completion.output), abs=1e-4
        )
    assert completion.tokens_out == 3  # the answer and one token per probe


@pytest.mark.llm
def test_generate_mode_reports_semantic_entropy_and_self_ref_together() -> None:
    options = {"model": "smollm2-135m", "mode": "generate", "max_tokens": 6, "temperature": 1.0, "samples": 4}
    backend: Any = create_backend("llamacpp", "small", options | {"stop": ["\n"], "n_threads": 2, "self_ref": True})
    backend.load()
    text = "The capital of France is"
    [completion] = asyncio.run(backend.infer([Query("q1", text)]))
    features = completion.features
    assert 0.0 <= features["semantic_entropy"] <= math.log(4) + 1e-9
    assert 0.0 <= features["self_ref"] <= 1.0
    with backend._lock:
        expected = _fresh_share(backend, backend.llm_options.probes()[0], text, completion.output)
    assert features["self_ref"] == pytest.approx(expected, abs=1e-4)
