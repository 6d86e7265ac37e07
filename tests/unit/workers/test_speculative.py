"""The speculative cascade: the deferral rules as pure functions, then the decoder on a real model.

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
from workers.speculative import (
    RULES,
    chow_defers,
    common_prefix,
    defers,
    diff_defers,
    opt_defers,
    softmax,
    total_variation,
)

# --------------------------------------------------------------------------- rules (pure)


def test_total_variation_of_known_pairs() -> None:
    assert total_variation([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0
    assert total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert total_variation([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]) == 0.5
    assert total_variation([0.75, 0.25], [0.5, 0.5]) == total_variation([0.5, 0.5], [0.75, 0.25]) == 0.25
    with pytest.raises(ValueError, match="different vocabularies"):
        total_variation([0.5, 0.5], [1.0, 0.0, 0.0])


def test_chow_boundary_is_strict() -> None:
    q = np.array([0.75, 0.25])
    assert not chow_defers(q, 0.25)  # 0.75 < 1 - 0.25 is false: at the threshold the drafter keeps
    assert chow_defers(q, 0.125)  # 0.75 < 0.875
    assert not chow_defers(q, 0.5)


def test_chow_alpha_extremes() -> None:
    uniform = np.full(4, 0.25)
    certain = np.array([1.0, 0.0, 0.0, 0.0])
    assert chow_defers(uniform, 0.0) and chow_defers(np.array([0.999, 0.001]), 0.0)
    assert not chow_defers(certain, 0.0)  # only a certain drafter keeps at alpha 0
    assert not chow_defers(uniform, 1.0) and not chow_defers(uniform, 7.5)


def test_diff_boundary_is_strict() -> None:
    q, p = np.array([0.5, 0.5]), np.array([0.75, 0.25])
    assert not diff_defers(q, p, 0.25)  # 0.5 < 0.75 - 0.25 is false
    assert diff_defers(q, p, 0.125)
    assert not diff_defers(p, q, 0.0)  # a drafter more confident than the target never defers


def test_opt_boundary_scales_the_margin_by_total_variation() -> None:
    q, p = np.array([0.5, 0.5]), np.array([0.75, 0.25])  # D_TV = 0.25
    assert opt_defers(q, p, 0.0)  # 0.5 < 0.75
    assert opt_defers(q, p, 0.5)  # 0.5 < 0.75 - 0.125
    assert not opt_defers(q, p, 1.0)  # 0.5 < 0.75 - 0.25 is false: exactly at the boundary
    assert not diff_defers(q, p, 0.5)  # where Diff, with the unscaled margin, keeps
    same = np.array([0.25, 0.25, 0.5])
    assert not opt_defers(same, same, 0.0)  # identical models: nothing to gain by deferring


def test_rules_defer_less_as_alpha_grows_and_never_at_alpha_one() -> None:
    rng = np.random.default_rng(7)
    alphas = (0.0, 0.05, 0.2, 0.5, 0.8, 1.0, 2.0)
    for _ in range(300):
        p, q = rng.dirichlet(np.full(50, 0.3)), rng.dirichlet(np.full(50, 0.3))
        for rule in RULES:
            decisions = [defers(rule, q, p, a) for a in alphas]
            assert decisions == sorted(decisions, reverse=True), (rule, decisions)  # True... then False...
            assert not defers(rule, q, p, 1.0)  # max p - max q <= D_TV <= 1


def test_defers_dispatches_and_rejects_bad_input() -> None:
    q, p = np.array([0.5, 0.5]), np.array([0.75, 0.25])
    assert defers("chow", q, p, 0.125) == chow_defers(q, 0.125)
    assert defers("diff", q, p, 0.125) == diff_defers(q, p, 0.125)
    assert defers("opt", q, p, 0.5) == opt_defers(q, p, 0.5)
    with pytest.raises(ValueError, match="unknown deferral rule"):
        defers("never", q, p, 0.5)  # type: ignore[arg-type]
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            chow_defers(q, bad)


def test_softmax_and_common_prefix() -> None:
    probs = softmax(np.array([1000.0, 1000.0, -np.inf]))
    assert probs.tolist() == [0.5, 0.5, 0.0]
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2


# --------------------------------------------------------------------------- a real model (SmolLM2-135M twice)

PROMPT = "<|im_start|>user\nWrite a Python function that adds two numbers.<|im_end|>\n<|im_start|>assistant\n"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def cascade() -> Any:
    pytest.importorskip("llama_cpp")
    from workers.speculative import SpeculativeCascade

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
    from workers.artifacts import ARTIFACTS
    from workers.speculative import SpeculativeCascade

    other = ARTIFACTS["qwen2.5-coder-0.5b"].path
    if not other.exists():
        pytest.skip("Qwen2.5-Coder-0.5B is not in the cache (491 MB; not fetched for this test)")
    with pytest.raises(ConfigError, match="do not share a tokenizer: vocabulary size differs") as info:
        SpeculativeCascade("smollm2-135m", str(other), n_ctx=64, gpu_layers=0)
    assert "\n" not in str(info.value)
