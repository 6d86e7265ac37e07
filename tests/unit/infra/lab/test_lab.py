"""Fitting, simulating and choosing policies on a recorded trace of the simulated portfolio."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from rich.console import Console

from infra.cli.app import main
from infra.lab.evaluate import LabOptions, baselines, evaluate, fit, markdown, plot, single_points
from infra.lab.fitters import FrugalGPTMethod, _chain_outcome
from infra.lab.metrics import Reference
from infra.lab.registry import METHODS, make_method
from infra.lab.simulate import simulate, summarise
from infra.lab.table import TraceTable
from infra.recorder import TraceOptions, run_trace
from policies import make_post_hoc, make_pre_call
from policies.file import load_policy
from topics.errors import ConfigError, DataError
from topics.traces import TraceRow, read_trace, write_trace

QUIET = Console(quiet=True)
SIMULATED_METHODS = sorted(name for name in METHODS if name != "self_ref")
"""Every method but Self-REF, whose signal only LLM tiers report (test_answer_signal_methods.py)."""


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lab") / "sim.jsonl"
    run_trace(TraceOptions("simulated", n=400, seed=5, out=str(path)), QUIET)
    return path


@pytest.fixture(scope="module")
def split(trace: Path) -> tuple[TraceTable, TraceTable]:
    return TraceTable.from_rows(read_trace(trace)).split(0.5)


def test_the_split_is_by_item_and_stable(split: tuple[TraceTable, TraceTable]) -> None:
    train, test = split
    assert not set(train.items) & set(test.items)
    assert 150 < len(train) < 250
    assert train.tiers == ("small", "medium", "large")


@pytest.mark.parametrize("name", SIMULATED_METHODS)
def test_every_method_fits_and_yields_a_monotone_enough_curve(name: str, split: tuple[TraceTable, TraceTable]) -> None:
    train, test = split
    method = make_method(name)
    method.prepare(train)
    settings = method.settings()
    assert len(settings) >= 5
    points = [summarise(simulate(test, *method.policies(s))) for s in settings]
    cheapest, dearest = min(points, key=lambda p: p.cost), max(points, key=lambda p: p.cost)
    if name == "select_then_route":
        # Its cheapest setting still escalates on failed agreement checks: it buys accuracy, at a tenth of the cost.
        assert dearest.accuracy > cheapest.accuracy and cheapest.cost < dearest.cost / 4
    else:
        assert dearest.accuracy > cheapest.accuracy + 0.1  # spending more buys accuracy on this portfolio
    assert all(1.0 <= p.calls <= 3.0 for p in points)


def test_frugalgpt_search_predicts_what_the_stream_code_does(split: tuple[TraceTable, TraceTable]) -> None:
    """The vectorised chain search and the verifier's decisions agree item for item."""
    train, _ = split
    method = FrugalGPTMethod()
    method.prepare(train)
    for budget in method.settings()[::3]:
        chain, thresholds, accuracy, cost = method.search(budget)
        assert cost <= budget + 1e-12
        again = _chain_outcome(chain, thresholds, method._scores, train.correct, train.cost)
        assert again == (accuracy, cost)
        simulated = summarise(simulate(train, *method.policies(budget)))
        assert simulated.accuracy == pytest.approx(accuracy)
        assert simulated.cost == pytest.approx(cost)


def test_fit_respects_the_budget_and_writes_a_loadable_policy(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    policy = fit(LabOptions(str(trace)), "lm_cascade", 0.002, None, str(out), QUIET)
    assert policy.fitted["train"]["cost"] <= 0.002
    loaded = load_policy(out)
    assert (loaded.name, loaded.post_hoc, loaded.tiers) == ("lm_cascade", "lm_cascade", ("small", "medium", "large"))
    _, post = loaded.build()
    assert post.params() == json.loads(out.read_text())["post_hoc"]["params"]
    target = fit(LabOptions(str(trace)), "gatekeeper", None, 0.9, str(out), QUIET)
    assert target.fitted["train"]["accuracy"] >= 0.9
    with pytest.raises(DataError, match="no setting costs <= 1e-09"):
        fit(LabOptions(str(trace)), "threshold", 1e-9, None, str(out), QUIET)


def test_eval_reports_every_policy_and_baseline(trace: Path, tmp_path: Path) -> None:
    report = evaluate(LabOptions(str(trace), "threshold,frugalgpt", budgets=(0.003,)), QUIET)
    names = [p["name"] for p in report["policies"]]
    assert names == ["threshold", "frugalgpt"]
    expected = ["single:small", "single:medium", "single:large", "random", "oracle"]
    assert [b["name"] for b in report["baselines"]] == expected
    for entry in report["policies"] + report["baselines"]:
        for key in ("name", "family", "apgr", "cpt50", "cpt80", "aiq", "cost_at_strongest_accuracy", "params"):
            assert key in entry
    assert report["policies"][0]["apgr"] > report["baselines"][3]["apgr"]  # a cascade beats the random mix
    assert "| threshold | post-hoc |" in markdown(report)
    for entry in report["policies"] + report["baselines"]:  # the buyer's figures
        points = [(p["cost"], p["accuracy"]) for p in entry["points"]]
        strong_cost = report["reference"]["strong"]["cost"]
        for share, accuracy in entry["accuracy_at_cost"].items():
            affordable = [a for c, a in points if c <= float(share) * strong_cost + 1e-15]
            assert accuracy == (max(affordable) if affordable else None)
        match = entry["cost_to_match_strongest"]
        assert match is None or match == pytest.approx(entry["cost_at_strongest_accuracy_pct"] / 100)
    assert set(report["best_single_at_cost"]) == {"0.1", "0.2", "0.5"}
    assert report["best_single_at_cost"]["0.5"]["tier"] in ("small", "medium")  # large alone costs more than half
    plot(report, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_clear_error(trace: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown policy 'nope'; known: .*all"):
        evaluate(LabOptions(str(trace), "nope"), QUIET)
    with pytest.raises(DataError, match="no tier 'huge'"):
        evaluate(LabOptions(str(trace), "threshold", tiers=("small", "huge")), QUIET)
    with pytest.raises(DataError, match="one tier"):
        evaluate(LabOptions(str(trace), "threshold", tiers=("small",)), QUIET)
    with pytest.raises(DataError, match="cannot read trace"):
        evaluate(LabOptions(str(tmp_path / "missing.jsonl")), QUIET)
    lines = trace.read_text().splitlines(keepends=True)
    first_item = json.loads(lines[0])["item_id"]
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text("".join(line for line in lines if json.loads(line)["item_id"] == first_item))
    with pytest.raises(DataError, match="the trace needs more items"):
        evaluate(LabOptions(str(tiny), "threshold"), QUIET)


def test_reports_summarise_long_weight_lists_by_size() -> None:
    from infra.lab.evaluate import compact

    params = {"pre_call": {"params": {"coef": [[0.5] * 391] * 3, "tiers": ["a", "b"], "alpha": 0.3}}}
    assert compact(params) == {"pre_call": {"params": {"coef": "<3x391 numbers>", "tiers": ["a", "b"], "alpha": 0.3}}}


def _ladder_rows(tiers: int, items: int) -> list[TraceRow]:
    """Only the last tier is ever right, and only it is confident."""
    last = tiers - 1
    return [
        TraceRow(
            item_id=f"q{i}",
            dataset="synthetic",
            input=f"question {i}",
            label="A",
            tier=f"t{t:02d}",
            model=f"m{t}",
            output="A" if t == last else "B",
            correct=t == last,
            confidence=0.9 if t == last else 0.1,
            cost=0.001 * 2**t,
        )
        for i in range(items)
        for t in range(tiers)
    ]


def test_a_cascade_over_twelve_tiers_reaches_the_last_one() -> None:
    table = TraceTable.from_rows(_ladder_rows(12, 10))
    outcomes = simulate(table, make_pre_call("cheapest_first"), make_post_hoc("threshold", {"default_threshold": 0.5}))
    assert all(len(o.path) == 12 and o.tier == "t11" and o.correct for o in outcomes)  # no hop limit at 8


def test_a_repeated_item_and_tier_is_refused_with_its_row() -> None:
    rows = _ladder_rows(2, 3)
    with pytest.raises(DataError, match=r"row 7: a second row for item 'q0' and tier 't00'"):
        TraceTable.from_rows([*rows, rows[0]])


def test_the_oracle_pays_the_cheapest_tier_where_no_tier_is_right(split: tuple[TraceTable, TraceTable]) -> None:
    _, test = split
    ref = Reference.of(single_points(test))
    (oracle,) = [b for b in baselines(test, ref, ()) if b["name"] == "oracle"]
    right = [next((t for t in range(3) if test.correct[i, t]), 0) for i in range(len(test))]  # tiers cheapest first
    assert oracle["points"][0]["cost"] == pytest.approx(sum(test.cost[i, t] for i, t in enumerate(right)) / len(test))
    assert any(not test.correct[i].any() for i in range(len(test)))  # the case the rule is for occurs here


def test_a_piped_report_is_written_whole(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--trace", str(trace), "--methods", "threshold"]) == 0
    out = capsys.readouterr().out
    assert "single:medium" in out and "…" not in out  # not cut to 80 columns
    assert "best single tier affordable at a share of the strongest tier's cost: within 10%" in out


def test_every_method_handles_twelve_tiers_or_says_why_not(tmp_path: Path) -> None:
    rng = random.Random(1)
    rows = []
    for i in range(120):
        hard = rng.random()
        for t in range(12):  # each tier a little better and 1.6x dearer than the one before
            correct = rng.random() < (t + 1) / 13 * (1.2 - hard)
            confidence = min(1.0, max(0.0, (0.7 if correct else 0.35) + rng.gauss(0, 0.15)))
            rows.append(TraceRow(
                item_id=f"q{i}", dataset="synthetic", input=f"question {i} " + "word " * int(hard * 20), label="A",
                tier=f"t{t:02d}", model=f"m{t}", output="A" if correct else "B", correct=correct,
                confidence=confidence, features={"max_prob": confidence}, cost=0.001 * 1.6**t,
            ))  # fmt: skip
    trace = tmp_path / "twelve.jsonl"
    write_trace(trace, rows)
    report = evaluate(LabOptions(str(trace)), QUIET)
    ran, skipped = {p["name"] for p in report["policies"]}, report.get("skipped", {})
    assert ran | set(skipped) == set(METHODS) and not ran & set(skipped)
    assert {"threshold", "frugalgpt", "rational_tuning", "routellm_mf", "optllm"} <= ran
    assert all(reason for reason in skipped.values())  # every skip says why (cascade routing: up to 8 tiers)
    assert "up to 8 tiers" in skipped["cascade_routing"]
