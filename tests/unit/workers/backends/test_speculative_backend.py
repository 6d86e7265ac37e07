"""The ``speculative`` tier backend: its options, and a real generation with SmolLM2 as drafter and target."""

from __future__ import annotations

import asyncio

import pytest

from topics.errors import ConfigError
from workers.backends import Query, create_backend

PROMPT = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": "smollm2-135m"}, "'drafter'"),
        ({"drafter": "smollm2-135m", "target": "smollm2-135m", "rule": "best"}, "'rule' must be one of"),
        ({"drafter": "smollm2-135m", "target": "smollm2-135m", "alpha": 2}, "'alpha'"),
        ({"drafter": "smollm2-135m", "target": "smollm2-135m", "prompt": "no slot"}, "{input}"),
    ],
)
def test_bad_options_are_one_clear_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_backend("speculative", "spec", options)


@pytest.mark.llm
def test_a_speculative_tier_answers_and_reports_where_its_tokens_came_from() -> None:
    pytest.importorskip("llama_cpp")
    options = {"drafter": "smollm2-135m", "target": "smollm2-135m", "rule": "chow", "alpha": 0.0, "max_tokens": 8,
               "n_ctx": 256, "n_threads": 1, "prompt": PROMPT, "price_per_cpu_second": 1e-5}  # fmt: skip
    backend = create_backend("speculative", "spec", options)
    backend.load()
    try:
        (completion,) = asyncio.run(backend.infer([Query("r1", "Name a colour.")]))
    finally:
        asyncio.run(backend.close())
    assert completion.error is None and completion.output
    assert backend.model_name == "smollm2-135m>smollm2-135m"
    # Drafter == target: the target agrees with every drafted token, so none is replaced.
    assert completion.features["replaced_share"] == 0.0 and completion.confidence == 1.0
    assert 0.0 < completion.features["target_calls_per_token"] <= 1.0
    assert 0 < completion.tokens_out <= 8 and completion.cost > 0
