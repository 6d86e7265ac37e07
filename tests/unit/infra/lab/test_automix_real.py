"""AutoMix on a real LLM trace: SmolLM2-135M judging its own MMLU answers, Gemma-3-270M above it.

Both models are near chance on MMLU, so nothing is claimed about gains; what must
hold on real model output is the mechanics: every answer below the top carries a
``verify_p`` in [0, 1] read from the model's own Yes/No distribution, both AutoMix
variants fit on the train split, and their sweeps move the operating point between
the two tiers' costs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from infra.lab.evaluate import LabOptions, evaluate
from infra.recorder import TraceOptions, run_trace
from topics.traces import read_trace

pytestmark = [pytest.mark.llm, pytest.mark.slow]
QUIET = Console(quiet=True)
PROMPT = "The following is a multiple choice question. Answer with the letter of the correct option.\\n\\n{input}"


def test_automix_fits_and_sweeps_on_a_real_trace(tmp_path: Path) -> None:
    # Gemma is priced 10x per second so the ladder is in cost order: smollm2's self-verification doubles its
    # compute, and the default router starts at the cheapest tier.
    config = tmp_path / "two-llms.toml"
    config.write_text(
        f"""namespace = "t"
dataset = "mmlu"

[[tiers]]
name = "smollm2"
backend = "llamacpp"
batch_size = 8
options = {{ model = "smollm2-135m", n_threads = 2, verify = true, prompt = "{PROMPT}" }}

[[tiers]]
name = "gemma3"
backend = "llamacpp"
batch_size = 8
options = {{ model = "gemma3-270m", n_threads = 2, price_per_cpu_second = 1e-3, prompt = "{PROMPT}" }}
"""
    )
    trace = tmp_path / "trace.jsonl"
    run_trace(TraceOptions(str(config), n=60, seed=2, out=str(trace)), QUIET)
    rows = read_trace(trace)
    small = [r for r in rows if r.tier == "smollm2"]
    assert len(small) == 60 and all(r.error is None for r in rows)
    assert all(0.0 <= r.features["verify_p"] <= 1.0 for r in small)
    assert len({round(r.features["verify_p"], 6) for r in small}) > 10  # a real, varying signal

    report = evaluate(LabOptions(str(trace), "automix,automix_pomdp"), QUIET)
    costs = {b["name"]: b["points"][0]["cost"] for b in report["baselines"] if b["name"].startswith("single:")}
    for policy in report["policies"]:
        spent = sorted({p["cost"] for p in policy["points"]})
        assert len(spent) >= 2, policy["name"]  # the sweep moves the operating point
        assert spent[0] <= costs["single:smollm2"] * 1.01, policy["name"]  # accept everything at the small tier
        assert spent[-1] > costs["single:smollm2"] * 1.01, policy["name"]  # and escalate some
    threshold = next(p for p in report["policies"] if p["name"] == "automix")
    top = max(p["cost"] for p in threshold["points"])
    assert top >= costs["single:smollm2"] + 0.9 * costs["single:gemma3"]  # t above every verify_p: escalate all
