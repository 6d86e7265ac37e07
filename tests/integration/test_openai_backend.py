"""The openai backend against a real OpenAI-compatible server: llama-cpp-python's, running SmolLM2-135M.

Same model file, same prompt: the HTTP backend must report the same answer and the
same confidence features as the in-process llamacpp backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.broker import free_port
from workers.backends import create_backend
from workers.backends.assets.artifacts import fetch
from workers.backends.base import Query

pytestmark = [pytest.mark.integration, pytest.mark.llm]

QUESTIONS = [
    "What is the capital of France?\nA. Berlin\nB. Madrid\nC. Paris\nD. Rome\nAnswer:",
    "Which number is even?\nA. 3\nB. 7\nC. 9\nD. 12\nAnswer:",
    "The chemical symbol for water is\nA. H2O\nB. CO2\nC. NaCl\nD. O2\nAnswer:",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free loopback port; stopped by pid afterwards."""
    model = fetch("smollm2-135m", "model")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", "2", "--logits_all", "true", "--n_ctx", "2048",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"server exited: {log.read_text()[-2000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not come up in 120 s"
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def _both(base: str, options: dict[str, Any]) -> tuple[Any, Any]:
    local: Any = create_backend("llamacpp", "small", {"model": "smollm2-135m", "n_threads": 2} | options)
    local.load()
    remote_options = {"model": "smollm2", "base_url": base, "extra_body": {"repeat_penalty": 1.0}} | options
    if options.get("mode", "choice") == "choice":  # SmolLM2 would rather end its turn than say a letter
        remote_options["choice_logit_bias"] = {str(local.loaded.token_eos()): -100}
    remote: Any = create_backend("openai", "small", remote_options)
    remote.load()
    return local, remote


async def _answers(backend: Any, queries: list[Query]) -> list[Any]:
    return await asyncio.wait_for(backend.infer(queries), timeout=120)


async def test_option_logprobs_over_http_equal_in_process_within_the_top_k(server: str) -> None:
    local, remote = _both(server, {})
    for question in QUESTIONS:
        here, there = local.option_logprobs(question), await remote.option_logprobs(question)
        present = {k: v for k, v in there.items() if math.isfinite(v)}
        assert present, "no option in the server's top 20"
        for option, logprob in present.items():
            assert logprob == pytest.approx(here[option], abs=1e-3), option
        for option in set(there) - set(present):  # outside the top k: less likely than every reported option
            assert here[option] < min(present.values())
    await remote.close()


async def test_choice_mode_over_http_gives_the_same_features(server: str) -> None:
    # all three letters, and Yes / No after the verification and self_ref prompts, are in SmolLM2's top 20 here
    local, remote = _both(server, {"choices": ["A", "C", "D"], "verify": True, "self_ref": True})
    queries = [Query(f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    here, there = await _answers(local, queries), await _answers(remote, queries)
    await remote.close()
    for a, b in zip(here, there, strict=True):
        assert b.error is None, b.error
        assert a.output == b.output
        assert a.tokens_in == b.tokens_in
        for key in ("max_prob", "margin", "entropy", "option_mass", "verify_p", "self_ref"):
            assert b.features[key] == pytest.approx(a.features[key], abs=2e-3), key


async def test_greedy_generation_over_http_matches_in_process(server: str) -> None:
    local, remote = _both(server, {"mode": "generate", "max_tokens": 10, "temperature": 0.0})
    queries = [Query("g", "The capital of France is")]
    [a], [b] = await _answers(local, queries), await _answers(remote, queries)
    await remote.close()
    assert b.error is None, b.error
    assert a.output == b.output and a.tokens_out == b.tokens_out
    for key, value in a.features.items():
        assert math.isfinite(b.features[key])
        assert b.features[key] == pytest.approx(value, abs=5e-3), key


async def test_an_unreachable_endpoint_is_an_error_answer_after_retries(tmp_path: Path) -> None:
    options = {"model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 2, "backoff_s": 0.01}
    backend: Any = create_backend("openai", "remote", options)
    backend.load()
    started = time.monotonic()
    [completion] = await _answers(backend, [Query("x", "hello")])
    await backend.close()
    assert completion.error is not None and "after 3 attempts" in completion.error
    assert completion.confidence == 0.0
    assert time.monotonic() - started < 30
