"""``eval --shadow``: a candidate policy file against the live one on a trace from the stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli.app import main
from infra.lab.shadow import shadow_report
from infra.lab.simulate import simulate, summarise
from infra.lab.table import TraceTable
from policies.base import PostHocPolicy, PreCallPolicy
from policies.file import PolicyFile, load_policy
from topics.traces import write_trace

from .test_offpolicy import TIERS, complete_rows, stream_rows


def _file(path: Path, threshold: float) -> str:
    PolicyFile(f"threshold-{threshold}", "post-hoc", TIERS, "cheapest_first", {}, "threshold",
               {"default_threshold": threshold}).save(path)  # fmt: skip
    return str(path)


@pytest.mark.parametrize("estimator", ["dr", "ips"])
def test_the_live_policy_is_exact_and_the_candidates_truth_is_inside_its_interval(
    tmp_path: Path, estimator: str
) -> None:
    complete = complete_rows(3000)
    write_trace(tmp_path / "stream.jsonl", stream_rows(complete, share=0.4))
    live, candidate = _file(tmp_path / "live.json", 0.55), _file(tmp_path / "cand.json", 0.8)
    report = shadow_report(str(tmp_path / "stream.jsonl"), candidate, live, estimator)  # type: ignore[arg-type]
    table = TraceTable.from_rows(complete)
    truth = {t: summarise(simulate(table, *_built(path))) for t, path in (("live", live), ("cand", candidate))}
    _, live_estimate = report.live
    assert live_estimate.accuracy.value == pytest.approx(truth["live"].accuracy)  # its own path: exact
    assert live_estimate.observed == report.requests  # every request of it was seen
    _, estimate = report.candidate
    assert estimate.accuracy.low <= truth["cand"].accuracy <= estimate.accuracy.high
    assert estimate.cost.low <= truth["cand"].cost <= estimate.cost.high
    assert 0 < report.explored < report.requests == 3000


def _built(path: str) -> tuple[PreCallPolicy, PostHocPolicy]:
    return load_policy(path).build()


def test_the_cli_prints_both_and_writes_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_trace(tmp_path / "stream.jsonl", stream_rows(complete_rows(1500), share=0.4))
    live, candidate = _file(tmp_path / "live.json", 0.55), _file(tmp_path / "cand.json", 0.8)
    out = tmp_path / "shadow.json"
    code = main(["eval", "--trace", str(tmp_path / "stream.jsonl"), "--shadow", candidate, "--live", live,
                 "--json", str(out)])  # fmt: skip
    assert code == 0 and "candidate" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["candidate"]["accuracy_ci"][0] <= doc["candidate"]["accuracy"] <= doc["candidate"]["accuracy_ci"][1]
    assert main(["eval", "--trace", str(tmp_path / "stream.jsonl"), "--shadow", candidate]) == 2
    assert "--live LIVE.json go together" in capsys.readouterr().err
