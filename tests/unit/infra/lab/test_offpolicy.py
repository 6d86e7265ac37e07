"""Off-policy estimates on a trace built from the stream: a synthetic complete trace (the truth),
and the stream trace a live cascade with explore-all exploration would have recorded of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from infra.cli.app import main
from infra.lab.evaluate import LabOptions, evaluate, fit, markdown
from infra.lab.offpolicy import (
    NO_EXPLORED_ITEM,
    Logged,
    OutcomeModel,
    PolicyEstimate,
    estimate_partials,
    estimate_policy,
    explored_rows,
    logged_items,
    logged_of,
    simulate_partial,
    single_tier,
    tier_infos,
)
from infra.lab.simulate import simulate, summarise
from infra.lab.table import TraceTable, in_train
from policies import make_post_hoc, make_pre_call
from policies.base import PostHocPolicy, PreCallPolicy
from topics.errors import DataError
from topics.traces import TraceRow, read_trace, write_trace

QUIET = Console(quiet=True)
TIERS = ("small", "medium", "large")
SKILL = (0.5, 0.7, 0.88)
"""Each tier's mean correctness, before the item's difficulty."""
PRICE = (1e-4, 6e-4, 3e-3)


def complete_rows(items: int, seed: int = 3) -> list[TraceRow]:
    """Every tier on every item: correct with a rate falling with the item's difficulty, confident
    when right (with noise), each call dearer on longer (harder) items."""
    gen = np.random.default_rng(seed)
    rows = []
    for i in range(items):
        hard = gen.random()
        for t, tier in enumerate(TIERS):
            correct = bool(gen.random() < min(1.0, SKILL[t] + 0.4 * (0.5 - hard)))
            confidence = float(np.clip((0.75 if correct else 0.45) + gen.normal(0, 0.15), 0.0, 1.0))
            rows.append(TraceRow(
                item_id=f"q{i}", dataset="synthetic", input=f"question {i}", label="A", tier=tier, model=f"m-{tier}",
                output="A" if correct else "B", correct=correct, confidence=confidence,
                features={"max_prob": confidence}, cost=PRICE[t] * (1.0 + hard),
            ))  # fmt: skip
    return rows


def policy(threshold: float) -> tuple[PreCallPolicy, PostHocPolicy]:
    return make_pre_call("cheapest_first"), make_post_hoc("threshold", {"default_threshold": threshold})


LIVE = policy(0.55)
CANDIDATE = policy(0.8)  # escalates more than the live policy: off its path


def stream_rows(complete: list[TraceRow], share: float, seed: int = 11, varying: bool = False) -> list[TraceRow]:
    """What the stream records of ``complete`` under the live policy: its path's rows (propensity 1)
    and, for a random ``share`` of requests (``varying``: each request's share drawn around it), every
    other tier too, with propensity ε."""
    table = TraceTable.from_rows(complete)
    paths = {o.item: set(o.path) for o in simulate(table, *LIVE)}
    gen = np.random.default_rng(seed)
    out = []
    for item, rows in zip(table.items, table.rows, strict=True):
        epsilon = float(gen.uniform(share / 2, share * 1.5)) if varying else share
        explored = gen.random() < epsilon
        for row in rows:
            if row.tier in paths[item]:
                out.append(row)
            elif explored:
                out.append(_with(row, propensity=epsilon))
    return out


def _with(row: TraceRow, **changes: object) -> TraceRow:
    fields = {name: getattr(row, name) for name in row.__struct_fields__}
    fields.update(changes)
    return TraceRow(**fields)


def _test_split(items: list[Logged]) -> list[Logged]:
    return [item for item in items if not in_train(item.item, 0.5)]


def _model(rows: list[TraceRow], pair: tuple[PreCallPolicy, PostHocPolicy]) -> OutcomeModel:
    """DR's outcome model as ``eval`` fits it: the candidate on the train split's explored requests."""
    table = TraceTable.from_rows(explored_rows(rows, TIERS))
    train = table.subset([i for i, item in enumerate(table.items) if in_train(item, 0.5)])
    outcomes = simulate(train, *pair)
    paths = [item.live_path() for item in logged_of(train)]
    return OutcomeModel.fit(paths, [o.correct for o in outcomes], [o.cost for o in outcomes])


def _estimate(rows: list[TraceRow], pair: tuple[PreCallPolicy, PostHocPolicy], how: str) -> PolicyEstimate:
    requests = _test_split(logged_items(rows, TIERS))
    model = _model(rows, pair) if how == "dr" else None
    return estimate_policy(requests, *pair, tier_infos(requests, TIERS), rng=np.random.default_rng(0),
                           estimator=how, model=model)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def complete() -> list[TraceRow]:
    return complete_rows(4000)


@pytest.fixture(scope="module")
def truth(complete: list[TraceRow]) -> dict[str, float]:
    """The candidate's accuracy and cost on the test split of the complete trace."""
    _, test = TraceTable.from_rows(complete).split(0.5)
    s = summarise(simulate(test, *CANDIDATE))
    return {"accuracy": s.accuracy, "cost": s.cost}


@pytest.mark.parametrize("how", ["ips", "dr"])
@pytest.mark.parametrize("varying", [False, True], ids=["constant-share", "varying-share"])
def test_the_estimates_cover_the_candidates_true_value(
    complete: list[TraceRow], truth: dict[str, float], how: str, varying: bool
) -> None:
    rows = stream_rows(complete, 0.4, varying=varying)  # truth within half the interval of the estimate (seed 11)
    found = _estimate(rows, CANDIDATE, how)
    assert found.requests == sum(not in_train(f"q{i}", 0.5) for i in range(4000))  # every test request counts
    assert found.observed < found.requests  # the candidate needed tiers the live policy did not run
    for metric in ("accuracy", "cost"):
        estimate = getattr(found, metric)
        assert estimate.method == how
        assert estimate.low < truth[metric] < estimate.high, (metric, estimate, truth[metric])
        assert estimate.low < estimate.value < estimate.high


def test_dr_is_tighter_than_ips(complete: list[TraceRow]) -> None:
    """The outcome model absorbs most of what the 1/ε weights would make noise of."""
    rows = stream_rows(complete, 0.25)
    ips, dr = _estimate(rows, CANDIDATE, "ips"), _estimate(rows, CANDIDATE, "dr")
    for metric in ("accuracy", "cost"):
        wide, narrow = getattr(ips, metric), getattr(dr, metric)
        assert narrow.high - narrow.low < wide.high - wide.low


@pytest.mark.parametrize("how", ["ips", "dr"])
def test_more_exploration_narrows_the_interval(complete: list[TraceRow], how: str) -> None:
    widths = []
    for share in (0.1, 0.25, 0.5):
        found = _estimate(stream_rows(complete, share), CANDIDATE, how)
        widths.append([found.accuracy.high - found.accuracy.low, found.cost.high - found.cost.low])
    for metric in (0, 1):
        assert widths[0][metric] > widths[1][metric] > widths[2][metric]


@pytest.mark.parametrize("how", ["ips", "dr"])
def test_on_a_complete_trace_the_estimate_is_the_simulation(complete: list[TraceRow], how: str) -> None:
    train, test = TraceTable.from_rows(complete[:1500]).split(0.5)
    requests = logged_of(test)
    assert tier_infos(requests, TIERS) == test.tier_infos()
    assert [p.outcome for p in simulate_partial(requests, *CANDIDATE, test.tier_infos())] == simulate(test, *CANDIDATE)
    outcomes = simulate(train, *CANDIDATE)
    model = OutcomeModel.fit([i.live_path() for i in logged_of(train)], [o.correct for o in outcomes],
                             [o.cost for o in outcomes])  # fmt: skip
    found = estimate_policy(requests, *CANDIDATE, test.tier_infos(), rng=np.random.default_rng(1),
                            estimator=how, model=model)  # type: ignore[arg-type]  # fmt: skip
    plain = summarise(simulate(test, *CANDIDATE))
    assert (found.accuracy.value, found.cost.value) == (plain.accuracy, plain.cost)
    assert found.observed == found.requests == len(test)
    assert found.accuracy.low < plain.accuracy < found.accuracy.high  # the interval is the split's sampling noise


def test_single_tiers_and_point_estimates(complete: list[TraceRow]) -> None:
    rows = stream_rows(complete, 0.25)
    requests = _test_split(logged_items(rows, TIERS))
    _, test = TraceTable.from_rows(complete).split(0.5)
    for t, tier in enumerate(TIERS):
        partials = single_tier(requests, tier)
        found = estimate_partials(requests, partials, "ips", None, np.random.default_rng(2))
        assert found.accuracy.low < float(test.correct[:, t].mean()) < found.accuracy.high
        point = estimate_partials(requests, partials, "ips", None, None)  # no rng: no interval
        assert point.accuracy.value == found.accuracy.value == point.accuracy.low == point.accuracy.high
    found = estimate_partials(requests, single_tier(requests, "small"), "ips", None, np.random.default_rng(2))
    assert found.observed == found.requests  # the live cascade starts every request at the small tier
    with pytest.raises(ValueError, match="outcome model"):
        estimate_partials(requests, single_tier(requests, "small"), "dr", None, None)


def test_the_estimates_are_deterministic(complete: list[TraceRow]) -> None:
    rows = stream_rows(complete, 0.25)
    assert _estimate(rows, CANDIDATE, "dr") == _estimate(rows, CANDIDATE, "dr")


def test_fitting_keeps_a_uniform_sample_of_the_requests(complete: list[TraceRow]) -> None:
    """The requests the live cascade escalated to the top have every tier without exploration; only a
    share ε of them is kept, so the items fitted on are not mostly the hard ones."""
    rows = stream_rows(complete, 0.25)
    kept = {row.item_id for row in explored_rows(rows, TIERS)}
    whole = [item for item in logged_items(rows, TIERS) if len(item.rows) == 3]
    topped = [item for item in whole if all(r.propensity == 1.0 for r in item.rows.values())]
    assert len(topped) > 300  # plenty of requests ran every tier on the live path alone
    assert 0.15 < sum(item.item in kept for item in topped) / len(topped) < 0.35
    assert all(item.item in kept for item in whole if item not in topped)  # every explored request


def _write(path: Path, rows: list[TraceRow]) -> Path:
    write_trace(path, rows)
    return path


def test_a_stream_trace_without_exploration_says_how_to_get_it(complete: list[TraceRow], tmp_path: Path) -> None:
    trace = _write(tmp_path / "unexplored.jsonl", stream_rows(complete[:600], 0.0))
    with pytest.raises(DataError, match=r"no request of this trace ran on every tier: turn exploration on"):
        evaluate(LabOptions(str(trace), "threshold"), QUIET)
    with pytest.raises(DataError, match=r"\[exploration\] share"):
        fit(LabOptions(str(trace)), "threshold", None, None, str(tmp_path / "p.json"), QUIET)
    assert "label some answers" in NO_EXPLORED_ITEM


def test_fit_works_on_the_explored_requests(complete: list[TraceRow], tmp_path: Path) -> None:
    trace = _write(tmp_path / "stream.jsonl", stream_rows(complete[:3000], 0.3))
    policy = fit(LabOptions(str(trace)), "threshold", None, None, str(tmp_path / "p.json"), QUIET)
    assert policy.fitted["fitted_on"] == "explored requests of a stream trace"
    assert 0.2 < policy.fitted["setting"] < 1.0
    on_complete = fit(LabOptions(str(_write(tmp_path / "c.jsonl", complete[:300]))), "threshold", None, None,
                      str(tmp_path / "q.json"), QUIET)  # fmt: skip
    assert "fitted_on" not in on_complete.fitted


def test_eval_of_a_stream_trace_reports_estimates_with_intervals(
    complete: list[TraceRow], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = _write(tmp_path / "stream.jsonl", stream_rows(complete[:3000], 0.3))
    out_json, out_md = tmp_path / "report.json", tmp_path / "report.md"
    args = ["eval", "--trace", str(trace), "--methods", "threshold,gatekeeper", "--json", str(out_json),
            "--md", str(out_md), "--estimator", "ips"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "IPS estimates over" in printed and "single:large" in printed and "95% interval" in printed
    report = json.loads(out_json.read_text())
    assert (report["kind"], report["estimator"]) == ("stream", "ips")
    assert [p["name"] for p in report["policies"]] == ["threshold", "gatekeeper"]
    assert [b["name"] for b in report["baselines"]] == ["single:small", "single:medium", "single:large"]
    for entry in report["policies"] + report["baselines"]:
        for metric in ("accuracy", "cost"):
            low, high = entry[f"{metric}_interval"]
            assert low <= entry[metric] <= high
        assert 0 < entry["observed"] <= entry["requests"] == report["items"]["test"]
    assert len(report["policies"][0]["points"]) > 5  # the sweep's point estimates, for the plot
    assert "| threshold | post-hoc |" in out_md.read_text()


def test_eval_of_a_complete_trace_is_unchanged(complete: list[TraceRow], tmp_path: Path) -> None:
    trace = _write(tmp_path / "complete.jsonl", complete[:600])
    report = evaluate(LabOptions(str(trace), "threshold", estimator="ips"), QUIET)
    assert "kind" not in report and "apgr" in report["policies"][0]
    assert markdown(report).startswith("| policy | family | APGR |")


@pytest.mark.parametrize("propensity", [0.0, 1.5, -0.2])
def test_read_trace_refuses_a_propensity_outside_zero_to_one(tmp_path: Path, propensity: float) -> None:
    row = complete_rows(1)[0]
    path = tmp_path / "t.jsonl"
    lines = [json.dumps({**json.loads(json.dumps(_as_dict(row))), "propensity": value}) for value in (0.5, propensity)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"t.jsonl:2: propensity is {propensity:g}: it must be in \(0, 1\]"):
        read_trace(path)
    path.write_text(lines[0] + "\n")
    assert read_trace(path)[0].propensity == 0.5


def _as_dict(row: TraceRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in row.__struct_fields__}
