"""Fitting the routers: what each fit promises, on synthetic vectors and on a recorded trace."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from rich.console import Console

from infra.lab.evaluate import LabOptions, evaluate, fit
from infra.lab.routing import (
    OptLLMMethod,
    RouteLLMClassifier,
    RouteLLMMF,
    _fit_mf,
    bootstrap_heads,
)
from infra.lab.simulate import simulate
from infra.lab.table import TraceTable
from infra.recorder import TraceOptions, run_trace
from policies.features import DEFAULT_EMBEDDING, shared_prefix, strip_prefix
from policies.file import load_policy
from policies.scoring import MatrixFactorisation, Standardiser
from topics.traces import read_trace, write_trace
from workers.backends.recorded import routellm_dir

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("routing") / "sim.jsonl"
    run_trace(TraceOptions("simulated", n=300, seed=9, out=str(path)), QUIET)
    return path


@pytest.fixture(scope="module")
def train(trace: Path) -> TraceTable:
    return TraceTable.from_rows(read_trace(trace)).split(0.5)[0]


def two_clusters(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Queries in two clusters; the weak tier is right only in the first, the strong one everywhere."""
    rng = np.random.default_rng(0)
    first = rng.random(n) < 0.5
    x = rng.normal(0, 0.3, (n, 5))
    x[:, 0] += np.where(first, 1.0, -1.0)
    correct = np.column_stack([first & (rng.random(n) < 0.9), np.ones(n, dtype=bool)])
    return x, correct


def test_the_mf_fit_learns_where_the_strong_tier_wins() -> None:
    x, correct = two_clusters()
    standardiser = Standardiser.fit(x)
    w1, v, w2 = _fit_mf(standardiser(x), correct)
    mf = MatrixFactorisation(("weak", "strong"), w1, v, w2, standardiser)
    scores = mf.scores(x)
    win = 1 / (1 + np.exp(-(scores[:, 1] - scores[:, 0])))
    first = x[:, 0] > 0
    assert win[~first].mean() > 0.8  # the weak tier is wrong there: the strong one wins
    assert win[first].mean() < win[~first].mean() - 0.3


def test_bootstrap_heads_separate_the_clusters_like_the_labels_do() -> None:
    x, correct = two_clusters()
    heads = bootstrap_heads(x, correct, ("weak", "strong"))
    p = heads.probs(x)
    first = x[:, 0] > 0
    assert p[first, 0].mean() > 0.7 and p[~first, 0].mean() < 0.3
    assert p[:, 1].min() > 0.9  # the strong tier is always right


@pytest.mark.parametrize("method_class", [RouteLLMMF, RouteLLMClassifier])
def test_routellm_alpha_sends_the_chosen_share_of_train_traffic_to_the_strong_tier(
    method_class: type[RouteLLMMF], train: TraceTable
) -> None:
    method = method_class()
    method.prepare(train)
    strong = train.tiers[method.strong]
    for share in (0.0, 0.3, 0.7, 1.0):
        outcomes = simulate(train, *method.policies(share))
        sent = np.mean([o.path[0] == strong for o in outcomes])
        assert sent == pytest.approx(share, abs=1.5 / len(train)), share


def test_optllm_front_trades_cost_for_expected_accuracy(train: TraceTable) -> None:
    method = OptLLMMethod()
    method.prepare(train)
    front = method.front()
    costs = [p["cost"] for p in front]
    accuracy = [p["expected_accuracy"] for p in front]
    assert costs == sorted(costs, reverse=True) and accuracy == sorted(accuracy, reverse=True)  # λ grows along it
    assert costs[0] > costs[-1]


@pytest.mark.parametrize("name", ["routellm_mf", "cascade_routing"])
def test_a_fitted_router_file_decides_like_the_lab(name: str, trace: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    policy = fit(LabOptions(str(trace)), name, 0.01, None, str(out), QUIET)
    table = TraceTable.from_rows(read_trace(trace))
    test = table.split(0.5)[1]
    loaded = simulate(test, *load_policy(out).build())
    direct = simulate(test, *policy.build())
    assert loaded == direct
    assert policy.fitted["train"]["cost"] <= 0.01
    assert policy.pre_call_params["embedding"] == DEFAULT_EMBEDDING  # the router stage embeds with it


def test_another_split_seed_draws_another_split(trace: Path) -> None:
    table = TraceTable.from_rows(read_trace(trace))
    standard, other = table.split(0.5)[1], table.split(0.5, seed=1)[1]
    assert standard.items != other.items and abs(len(standard) - len(other)) < len(table) // 5


FEW_SHOT = "".join(
    f"The following is a worked example about {topic}.\nQuestion: which choice is right in case {i}?\n"
    f"A. the first\nB. the second\nC. the third\nD. the fourth\nAnswer: {'ABCD'[i % 4]}\n\n"
    for i, topic in enumerate(("algebra", "anatomy", "astronomy", "ethics", "chemistry"))
)


def test_the_shared_prefix_is_what_nearly_every_query_begins_with() -> None:
    queries = [f"{FEW_SHOT}question {i} about something" for i in range(40)]
    assert shared_prefix(queries) == FEW_SHOT + "question "  # up to a word boundary, no word cut
    assert shared_prefix([*queries, "an outlier"]) == FEW_SHOT + "question "  # 40 of 41 still share it
    assert shared_prefix([*queries, *(f"other {i}" for i in range(5))]) == ""  # 40 of 45 is not nearly every
    assert shared_prefix(["same", "same", "same"]) == ""  # a query that is all prefix leaves nothing to read
    assert strip_prefix(queries[3], FEW_SHOT) == "question 3 about something"
    assert strip_prefix("unrelated", FEW_SHOT) == "unrelated"


@pytest.mark.skipif(routellm_dir() is None, reason="no RouteLLM MMLU files in ../shared/data here")
def test_routers_read_past_few_shot_examples_every_question_shares(tmp_path: Path) -> None:
    plain = tmp_path / "mmlu.jsonl"
    run_trace(TraceOptions("mmlu-recorded", n=600, seed=3, out=str(plain)), QUIET)
    shot = tmp_path / "few-shot.jsonl"  # the same five worked examples in front of every question
    write_trace(shot, [msgspec.structs.replace(row, input=FEW_SHOT + row.input) for row in read_trace(plain)])
    routers = "routellm_mf,routellm_clf,hybrid_llm,optllm,cargo"
    before, after = evaluate(LabOptions(str(plain), routers), QUIET), evaluate(LabOptions(str(shot), routers), QUIET)
    for a, b in zip(before["policies"], after["policies"], strict=True):
        assert a["name"] == b["name"] and abs(a["apgr"] - b["apgr"]) <= 0.02, (a["name"], a["apgr"], b["apgr"])
    policy = fit(LabOptions(str(shot)), "routellm_mf", 1.0, None, str(tmp_path / "mf.json"), QUIET)
    assert policy.pre_call_params["query_prefix"].startswith(FEW_SHOT)  # the router stage strips the same
    assert "query_prefix" not in fit(LabOptions(str(plain)), "routellm_mf", 1.0, None, str(tmp_path / "p.json"),
                                     QUIET).pre_call_params  # fmt: skip
