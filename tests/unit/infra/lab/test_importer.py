"""``tierflow trace import``: tables of per-model outcomes, wide and long, from the recorded data in ``../shared``."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from infra.cli.app import main
from infra.lab.evaluate import LabOptions, evaluate
from infra.lab.importer import ImportMap, import_table
from infra.lab.table import TraceTable
from topics.errors import ConfigError, DataError
from topics.traces import read_trace, write_trace
from workers.backends.recorded import shared_data_dir

QUIET = Console(quiet=True)
MIXTRAL, GPT4 = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
PRICES = {MIXTRAL: 0.0006, GPT4: 0.0124}
ROUTELLM = shared_data_dir() / "routellm-mmlu"
OMNIS = shared_data_dir() / "omnisbench" / "results-2026-08-19.json"
needs_shared = pytest.mark.skipif(not ROUTELLM.is_dir() or not OMNIS.is_file(), reason="no ../shared/data here")


def _wide(**changes: Any) -> ImportMap:
    return ImportMap.from_dict({"input": "prompt", "correct": "{model}", "models": [MIXTRAL, GPT4],
                                "prices": PRICES, **changes})  # fmt: skip


def _csv_shares(path: Path) -> dict[str, float]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {model: sum(r[model] == "True" for r in rows) / len(rows) for model in (MIXTRAL, GPT4)}


@needs_shared
def test_a_wide_routellm_table_becomes_a_trace_the_lab_evaluates_without_confidences(tmp_path: Path) -> None:
    source = tmp_path / "mmlu.csv"
    with source.open("w", newline="") as out:  # three subjects in one table, the subject as the category
        writer = csv.writer(out)
        writer.writerow(["prompt", MIXTRAL, GPT4, "subject"])
        for subject in ("anatomy", "astronomy", "college_biology"):
            with (ROUTELLM / f"mmlu_{subject}.csv").open(newline="") as handle:
                for row in csv.DictReader(handle):
                    writer.writerow([row["prompt"], row[MIXTRAL], row[GPT4], subject])
    rows = import_table(str(source), _wide(category="subject", dataset="mmlu"))
    table = TraceTable.from_rows(rows)
    assert table.tiers == ("mistralai-Mixtral-8x7B-Instruct-v0_1", GPT4) and not table.has_confidence
    shares = _csv_shares(source)
    assert table.correct.mean(axis=0).tolist() == pytest.approx([shares[MIXTRAL], shares[GPT4]])
    assert {r.cost for r in rows if r.model == GPT4} == {0.0124} and {r.category for r in rows} >= {"anatomy"}

    trace = tmp_path / "mmlu.jsonl"
    write_trace(trace, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy warnings on a trace without confidences
        report = evaluate(LabOptions(str(trace)), QUIET)
    ran = {p["name"] for p in report["policies"]}
    assert {"routellm_mf", "routellm_clf", "optllm", "cargo"} <= ran
    assert "threshold" not in ran and "rational_tuning" not in ran
    assert "has none" in report["skipped"]["threshold"]  # skipped with the reason, not a degenerate curve


@needs_shared
def test_gsm8k_responses_import_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gsm8k.jsonl"
    prices = [f"--price={m}={p}" for m, p in PRICES.items()]
    argv = ["trace", "import", str(ROUTELLM / "gsm8k_responses.csv"), "--out", str(out), "--input", "prompt",
            "--correct", "{model}", "--models", f"{MIXTRAL},{GPT4}", "--dataset", "gsm8k", *prices]  # fmt: skip
    assert main(argv) == 0
    rows = read_trace(out)
    assert len(rows) == 2 * 1319 and {r.dataset for r in rows} == {"gsm8k"}
    assert "1319 items x 2 tiers" in capsys.readouterr().out


@needs_shared
def test_a_long_omnisbench_table_imports_and_repeated_pairs_are_refused(tmp_path: Path) -> None:
    items = json.loads(OMNIS.read_text())["items"]
    long = {"layout": "long", "id": "item_id", "input": "item_id", "category": "dataset",
            "model": "chosen_model", "correct": "passed", "cost": "cost_usd"}  # fmt: skip
    every = tmp_path / "every.jsonl"
    every.write_text("".join(json.dumps(item) + "\n" for item in items))
    with pytest.raises(DataError, match=r"every.jsonl row \d+: a second row for item '.+' and model '.+' \(first: row"):
        import_table(str(every), ImportMap.from_dict(long))  # the random and oracle policies repeat pairs
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("".join(json.dumps(i) + "\n" for i in items if i["policy"] in ("always_big", "always_cheap")))
    rows = import_table(str(fixed), ImportMap.from_dict(long))
    table = TraceTable.from_rows(rows)
    assert len(table) == 364 and len(table.tiers) == 2
    assert sum(r.cost for r in rows) == pytest.approx(sum(i["cost_usd"] for i in items if i["policy"] != "random"
                                                          and i["policy"] != "oracle"))  # fmt: skip


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {"id": ["a", "b"], "q": ["one?", "two?"], "small": [0.2, 0.9], "large": [True, False],
               "small_conf": [0.4, 0.8], "large_conf": [0.7, 0.6]}  # fmt: skip
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    mapping = ImportMap.from_dict({"id": "id", "input": "q", "correct": "{model}", "confidence": "{model}_conf",
                                   "features": {"max_prob": "{model}_conf"}, "models": ["small", "large"],
                                   "prices": {"small": 1.0, "large": 10.0}})  # fmt: skip
    rows = import_table(str(tmp_path / "t.parquet"), mapping)
    assert [(r.item_id, r.tier, r.correct, r.confidence) for r in rows] == [
        ("a", "small", False, 0.4), ("a", "large", True, 0.7), ("b", "small", True, 0.8), ("b", "large", False, 0.6)
    ]  # fmt: skip
    assert [r.features for r in rows[:2]] == [{"max_prob": 0.4}, {"max_prob": 0.7}]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ({"q": "x", "model": "m", "ok": True, "c": float("nan")}, r"t.jsonl row 2: c is nan: a trace needs finite"),
        ({"q": "x", "model": "m", "ok": "maybe", "c": 1.0}, r"t.jsonl row 2: ok is 'maybe', not a number"),
        ({"q": "x", "model": "m", "ok": True, "c": -1.0}, r"t.jsonl row 2: c is -1, outside \[0, inf\]"),
        ({"q": "", "model": "m", "ok": True, "c": 1.0}, r"t.jsonl row 2: q is empty"),
    ],
)
def test_a_bad_value_names_its_row_and_field(tmp_path: Path, line: dict[str, Any], error: str) -> None:
    path = tmp_path / "t.jsonl"
    good = {"q": "fine", "model": "m", "ok": False, "c": 0.5}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")  # Python's json writes NaN as a bare word
    mapping = ImportMap.from_dict({"layout": "long", "input": "q", "correct": "ok", "cost": "c"})
    with pytest.raises(DataError, match=error):
        import_table(str(path), mapping)


def test_a_map_that_cannot_work_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("prompt,small\nhello,True\n")
    with pytest.raises(DataError, match=r"no column 'large' \(correct of large\); the table has: prompt, small"):
        import_table(str(path), ImportMap.from_dict({"input": "prompt", "correct": "{model}", "models": ["large"]}))
    with pytest.raises(DataError, match=r"row 1: no cost for model 'small'"):
        import_table(str(path), ImportMap.from_dict({"input": "prompt", "correct": "{model}", "models": ["small"]}))
    (tmp_path / "two.csv").write_text("prompt,a/b,a-b\nhello,True,False\n")
    clash = {"input": "prompt", "correct": "{model}", "models": ["a/b", "a-b"], "prices": {"a/b": 1, "a-b": 2}}
    with pytest.raises(ConfigError, match=r"models 'a/b' and 'a-b' both make tier 'a-b': name them in \[tiers\]"):
        import_table(str(tmp_path / "two.csv"), ImportMap.from_dict(clash))
    assert {r.tier for r in import_table(str(tmp_path / "two.csv"), ImportMap.from_dict(
        {**clash, "tiers": {"a/b": "ab"}}))} == {"ab", "a-b"}  # fmt: skip
    with pytest.raises(ConfigError, match="a wide table needs models"):
        ImportMap.from_dict({"input": "prompt", "correct": "{model}"})
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        ImportMap.from_dict({"input": "prompt", "correct": "ok", "colour": "blue"})
    (tmp_path / "t.txt").write_text("q,ok\n")
    with pytest.raises(DataError, match=r"must be .csv, .jsonl or .parquet, not .txt"):
        import_table(str(tmp_path / "t.txt"), ImportMap.from_dict({"layout": "long", "input": "q", "correct": "ok"}))
