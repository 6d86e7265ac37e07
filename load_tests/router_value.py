"""Are the routers worth their cost? The best router against the best single model one can afford.

For each trace, ``tierflow eval`` (every method) on its standard split; then, at 20% and 50%
of the strongest tier's cost: the best router's accuracy (pre-call and hybrid policies, at a
cost within that budget), the best single tier affordable there, and the oracle's accuracy at
that budget (its headroom). A router is worth its cost at a budget where it beats the single
tier; the goal counts only budgets where the oracle leaves at least 5 points over the single
tier (less than that, there is nothing for a router to win).

    python load_tests/router_value.py --json load_tests/results/router_value.json \\
        --trace traces/sarcasm-2000.jsonl --trace traces/mmlu-recorded-1200.jsonl \\
        --trace traces/gsm8k.jsonl --trace traces/omnisbench.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from infra.lab.evaluate import LabOptions, evaluate, load_table
from infra.lab.table import TraceTable

SHARES = ("0.2", "0.5")
HEADROOM = 0.05
ROUTER_FAMILIES = ("pre-call", "hybrid")


def oracle_at(test: TraceTable, budget: float) -> float | None:
    """The most accurate routing within a mean cost of ``budget``, knowing every answer: every item on
    the cheapest tier, then the items only a dearer tier gets right moved to their cheapest such tier,
    cheapest move first (each move gains one item, so this order is optimal)."""
    costs = test.cost.mean(axis=0)
    order = np.argsort(costs, kind="stable")
    cheapest = int(order[0])
    spent = float(test.cost[:, cheapest].sum())
    if spent > budget * len(test) + 1e-12:
        return None
    right = int(test.correct[:, cheapest].sum())
    moves = []
    for i in range(len(test)):
        if not test.correct[i, cheapest]:
            tier = next((int(t) for t in order if test.correct[i, t]), None)
            if tier is not None:
                moves.append(float(test.cost[i, tier] - test.cost[i, cheapest]))
    for extra in sorted(moves):
        if spent + extra > budget * len(test) + 1e-12:
            break
        spent += extra
        right += 1
    return right / len(test)


def judge(report: dict[str, Any], test: TraceTable) -> dict[str, Any]:
    """Per budget share: the best router, the best affordable single tier, the oracle, and the verdict."""
    routers = [p for p in report["policies"] if p["family"] in ROUTER_FAMILIES]
    out: dict[str, Any] = {}
    for share in SHARES:
        single = report["best_single_at_cost"][share]
        single_acc = None if single is None else single["accuracy"]
        rated = [(p["accuracy_at_cost"][share], p["name"]) for p in routers if p["accuracy_at_cost"][share] is not None]
        router_acc, router = max(rated) if rated else (None, None)
        oracle = oracle_at(test, float(share) * report["reference"]["strong"]["cost"])
        headroom = None if oracle is None or single_acc is None else oracle - single_acc
        counts = headroom is not None and headroom >= HEADROOM
        beats = router_acc is not None and (single_acc is None or router_acc > single_acc)
        out[share] = {
            "best_router": router,
            "router_accuracy": router_acc,
            "best_single": None if single is None else single["tier"],
            "single_accuracy": single_acc,
            "oracle_accuracy": oracle,
            "headroom": headroom,
            "counts": counts,
            "router_beats_single": beats,
        }
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", action="append", required=True, help="a trace (repeatable)")
    parser.add_argument("--json", default="", help="write the figures here")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    results = {}
    for trace in args.trace:
        console.print(f"evaluating every method on {trace}…")
        options = LabOptions(trace)
        report = evaluate(options, Console(stderr=True, quiet=True))
        _, _, test = load_table(options)  # the split evaluate judged on
        results[Path(trace).name] = {"test_items": report["items"]["test"], "budgets": judge(report, test),
                                     "skipped": sorted(report.get("skipped", {}))}  # fmt: skip
    table = Table(title="best router vs the best single tier affordable, at a share of the strongest tier's cost")
    for column in ("trace", "budget", "best router", "router acc", "best single", "single acc", "oracle", "verdict"):
        table.add_column(column, overflow="fold")
    met = True
    for name, result in results.items():
        for share, row in result["budgets"].items():
            if row["best_single"] is None:
                verdict = "no tier costs this little: not counted"
            elif not row["counts"]:
                verdict = f"headroom {_pct(row['headroom'])} < 5 points: not counted"
            else:
                verdict = "router better" if row["router_beats_single"] else "single better: goal missed"
                met = met and row["router_beats_single"]
            table.add_row(name, f"{float(share):.0%}", str(row["best_router"]), _pct(row["router_accuracy"]),
                          str(row["best_single"]), _pct(row["single_accuracy"]), _pct(row["oracle_accuracy"]),
                          verdict)  # fmt: skip
    Console(width=200).print(table)
    doc = {"traces": results, "goal_met": met, "headroom_points": HEADROOM}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
