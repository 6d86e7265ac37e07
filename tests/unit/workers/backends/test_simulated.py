"""The simulated backend: deterministic per request, accurate and calibrated as configured."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from topics.errors import ConfigError
from workers.backends import simulated
from workers.backends.base import Completion, Query, create_backend
from workers.backends.simulated import SimulatedBackend, simulated_gold_label

N = 5000


def _queries(n: int, prefix: str = "req") -> list[Query]:
    return [Query(f"{prefix}-{i}", "any text at all") for i in range(n)]


def _infer(backend: SimulatedBackend, batch: Sequence[Query]) -> list[Completion]:
    return asyncio.run(backend.infer(batch))


def _backend(tier: str = "small", **options: Any) -> SimulatedBackend:
    backend = create_backend("simulated", tier, options)
    assert isinstance(backend, SimulatedBackend)
    return backend


def _correct(completions: Sequence[Completion], queries: Sequence[Query], labels: Sequence[str]) -> np.ndarray:
    return np.array(
        [c.output == simulated_gold_label(q.request_id, labels) for c, q in zip(completions, queries, strict=True)]
    )


def test_gold_label_is_a_stable_function_of_the_request_id() -> None:
    labels = ["a", "b", "c"]
    golds = [simulated_gold_label(f"id-{i}", labels) for i in range(3000)]
    assert golds == [simulated_gold_label(f"id-{i}", labels) for i in range(3000)]
    assert simulated_gold_label("id-0") in ("0", "1")  # the default labels
    shares = [golds.count(label) / len(golds) for label in labels]
    assert all(abs(share - 1 / 3) < 0.04 for share in shares)


def test_same_request_same_answer_and_tiers_err_independently() -> None:
    queries = _queries(500)
    first = _infer(_backend(seed=7), queries)
    again = _infer(_backend(seed=7), list(reversed(queries)))
    assert first == list(reversed(again))  # batch order and composition do not matter
    other_tier = _infer(_backend("large", seed=7), queries)
    other_seed = _infer(_backend(seed=8), queries)
    assert [c.output for c in other_tier] != [c.output for c in first]
    assert [c.confidence for c in other_seed] != [c.confidence for c in first]


@pytest.mark.parametrize(("accuracy", "labels"), [(0.7, ["0", "1"]), (0.9, ["x", "y", "z"]), (0.55, ["0", "1"])])
def test_accuracy_matches_the_configured_value(accuracy: float, labels: list[str]) -> None:
    queries = _queries(N)
    completions = _infer(_backend(accuracy=accuracy, labels=labels), queries)
    observed = _correct(completions, queries, labels).mean()
    standard_error = math.sqrt(accuracy * (1 - accuracy) / N)
    assert abs(observed - accuracy) < 4 * standard_error
    assert {c.output for c in completions} == set(labels)


@pytest.mark.parametrize("accuracy", [0.6, 0.8])
def test_calibrated_confidence_predicts_accuracy_in_every_bin(accuracy: float) -> None:
    queries = _queries(N)
    completions = _infer(_backend(accuracy=accuracy), queries)
    correct = _correct(completions, queries, ["0", "1"])
    confidence = np.array([c.confidence for c in completions])
    assert ((confidence >= 0.0) & (confidence <= 1.0)).all()
    bins = np.minimum((confidence * 10).astype(int), 9)
    checked = 0
    for b in range(10):
        in_bin = bins == b
        n = int(in_bin.sum())
        if n < 100:
            continue
        mean_conf = confidence[in_bin].mean()
        tolerance = 4 * math.sqrt(mean_conf * (1 - mean_conf) / n) + 0.01  # + the bin's width effect
        assert abs(correct[in_bin].mean() - mean_conf) < tolerance, f"bin {b}: {n} answers"
        checked += 1
    assert checked >= 4
    assert correct[confidence > 0.8].mean() > correct[confidence < 0.5].mean() + 0.3


def test_other_calibration_schemes() -> None:
    queries = _queries(N)
    over = _infer(_backend(accuracy=0.7, calibration="overconfident"), queries)
    assert np.mean([c.confidence for c in over]) > 0.7 + 0.05
    flat = _infer(_backend(accuracy=0.7, calibration="uninformative"), queries)
    correct = _correct(flat, queries, ["0", "1"])
    confidence = np.array([c.confidence for c in flat])
    gap = confidence[correct].mean() - confidence[~correct].mean()
    standard_error = confidence.std() * math.sqrt(1 / correct.sum() + 1 / (~correct).sum())
    assert abs(gap) < 4 * standard_error  # no information about correctness


def test_features_describe_the_implied_distribution() -> None:
    (completion,) = _infer(_backend(labels=["a", "b", "c"], cost=0.25), _queries(1))
    c = completion.confidence
    assert completion.features["max_prob"] == c
    assert completion.features["margin"] == pytest.approx(c - (1 - c) / 2)
    assert completion.features["entropy"] >= 0.0
    assert completion.cost == 0.25


def test_zero_latency_never_awaits() -> None:
    coroutine = _backend(latency_ms=0.0).infer(_queries(10))
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)  # completes without suspending even once
    completions = finished.value.value
    assert len(completions) == 10
    assert all(c.latency_ms == 0.0 for c in completions)


def test_a_batch_sleeps_its_slowest_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(simulated.asyncio, "sleep", fake_sleep)
    backend = _backend(latency_ms=20.0, latency_jitter=0.5)
    queries = _queries(8)
    completions = _infer(backend, queries)
    draws = [backend.draw(q)[2] for q in queries]
    assert slept == [pytest.approx(max(draws) / 1000.0)]
    assert all(c.latency_ms == pytest.approx(max(draws) / 8) for c in completions)
    mean = np.mean([backend.draw(q)[2] for q in _queries(N)])
    assert mean == pytest.approx(20.0, rel=0.05)  # jitter keeps the configured mean


@pytest.mark.parametrize(
    "options",
    [{"accuracy": 1.5}, {"accuracy": "high"}, {"latency_ms": -1}, {"labels": ["only"]}, {"labels": "ab"},
     {"calibration": "perfect"}, {"seed": 1.5}],
)  # fmt: skip
def test_bad_options_raise_config_error_naming_the_key(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=repr(next(iter(options)))):
        _backend(**options)
