"""The speculative cascade's decoder on a real model (the deferral rules are tested in tests/unit/policies).

The model tests run SmolLM2-135M as both drafter and target (two contexts, one
tokenizer): the two then agree on every argmax, so whatever the rule decides the
greedy output must be the target's own, which checks the KV-cache bookkeeping
(rewinds after replaced drafts, bonus tokens, end of generation) exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from topics.errors import ConfigError

# --------------------------------------------------------------------------- a real model (SmolLM2-135M twice)

PROMPT = "<|im_start|>user\nWrite a Python function that adds two numbers.<|im_end|>\n<|im_start|>assistant\n"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def cascade() -> Any:
    pytest.importorskip("llama_cpp")
    from workers.backends.speculative_decoding import SpeculativeCascade

    model = SpeculativeCascade("smollm2-135m", "smollm2-135m", n_ctx=256, n_threads=1, gpu_layers=0)
    yield model
    model.close()


@pytest.fixture(scope="module")
def baseline(cascade: Any) -> Any:
    return cascade.generate_target_only(PROMPT, MAX_TOKENS)


def _check_accounting(result: Any) -> None:
    assert result.kept + result.deferred + result.bonus == len(result.tokens)
    assert result.kept <= result.drafted
    assert 0 <= result.replaced <= result.deferred
    assert result.seconds > 0 and result.tokens_per_s == pytest.approx(len(result.tokens) / result.seconds)
    assert result.mode == "greedy"


@pytest.mark.llm
def test_target_only_is_one_pass_per_token(baseline: Any) -> None:
    assert 0 < len(baseline.tokens) <= MAX_TOKENS and baseline.text
    assert baseline.target_calls == len(baseline.tokens) + (len(baseline.tokens) < MAX_TOKENS)
    assert baseline.drafter_calls == 0 and baseline.kept == 0
    _check_accounting(baseline)


@pytest.mark.llm
def test_chow_at_alpha_zero_reproduces_the_target_in_fewer_target_passes(cascade: Any, baseline: Any) -> None:
    result = cascade.generate(PROMPT, MAX_TOKENS, gamma=4, rule="chow", alpha=0.0)
    assert result.tokens == baseline.tokens and result.text == baseline.text
    _check_accounting(result)
    assert result.deferred > 0 and result.replaced == 0  # drafter == target: a deferral never changes the token
    assert result.target_calls < baseline.target_calls  # gamma + 1 positions scored per pass


@pytest.mark.llm
@pytest.mark.parametrize(("rule", "alpha"), [("chow", 1.0), ("diff", 0.0), ("opt", 0.0), ("opt", 0.3), ("opt", 1.0)])
def test_any_rule_reproduces_the_target_when_drafter_is_target(
    cascade: Any, baseline: Any, rule: Any, alpha: float
) -> None:
    result = cascade.generate(PROMPT, MAX_TOKENS, gamma=3, rule=rule, alpha=alpha)
    assert result.tokens == baseline.tokens
    _check_accounting(result)
    assert result.replaced == 0
    if alpha >= 1.0:
        assert result.deferred == 0 and result.kept + result.bonus == len(result.tokens)


@pytest.mark.llm
def test_a_disagreeing_drafter_is_corrected_and_both_caches_rewound(
    cascade: Any, baseline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other draft step the drafter's favourite moves to another token; always deferring still gives p."""
    real_feed = cascade.drafter.feed
    steps = iter(range(10_000))

    def contrary_feed(tokens: Any, n_logits: int) -> Any:
        rows = real_feed(tokens, n_logits)
        if next(steps) % 2:
            q = rows[-1].copy()
            top = int(np.argmax(q))
            other = (top + 1) % q.size
            q[top], q[other] = q[other], q[top]
            rows[-1] = q
        return rows

    monkeypatch.setattr(cascade.drafter, "feed", contrary_feed)
    result = cascade.generate(PROMPT, MAX_TOKENS, gamma=4, rule="chow", alpha=0.0)
    assert result.tokens == baseline.tokens
    _check_accounting(result)
    assert result.replaced > 0 and result.drafted > result.kept + result.deferred
    kept_all = cascade.generate(PROMPT, MAX_TOKENS, gamma=4, rule="chow", alpha=1.0)
    _check_accounting(kept_all)
    assert kept_all.tokens != baseline.tokens and kept_all.deferred == 0


@pytest.mark.llm
@pytest.mark.parametrize("gamma", [0, 7])
def test_every_draft_length_gives_the_same_output(cascade: Any, baseline: Any, gamma: int) -> None:
    result = cascade.generate(PROMPT, MAX_TOKENS, gamma=gamma, rule="chow", alpha=0.5)
    assert result.tokens == baseline.tokens
    _check_accounting(result)
    assert result.drafted <= gamma * result.target_calls
    if gamma == 0:
        assert result.bonus == len(result.tokens) and result.drafter_calls == 0


@pytest.mark.llm
def test_max_tokens_is_respected(cascade: Any, baseline: Any) -> None:
    result = cascade.generate(PROMPT, 5, gamma=4, rule="opt", alpha=0.5)
    assert result.tokens == baseline.tokens[:5]
    _check_accounting(result)


@pytest.mark.llm
def test_models_with_different_tokenizers_are_refused() -> None:
    pytest.importorskip("llama_cpp")
    from workers.backends.assets.artifacts import ARTIFACTS
    from workers.backends.speculative_decoding import SpeculativeCascade

    other = ARTIFACTS["qwen2.5-coder-0.5b"].path
    if not other.exists():
        pytest.skip("Qwen2.5-Coder-0.5B is not in the cache (491 MB; not fetched for this test)")
    with pytest.raises(ConfigError, match="do not share a tokenizer: vocabulary size differs") as info:
        SpeculativeCascade("smollm2-135m", str(other), n_ctx=64, gpu_layers=0)
    assert "\n" not in str(info.value)
