"""Benchmark: each model of the ``mmlu-llm`` portfolio on a fixed seeded MMLU sample.

Per model: accuracy, the AUROC of every confidence feature for "the answer is
correct" (features oriented so that higher means more confident: entropy is
negated), latency p50/p95 and prompt tokens per second. The models run through
``tierflow trace`` (so the benchmark also leaves a trace the policy lab can use),
one at a time, in process, each with every core. Recorded tiers (RouteLLM's Mixtral/GPT-4) are included
where ``../shared/data`` has them; their only confidence is a subject prior.

    python load_tests/llm_tiers.py --n 200 --json llm_tiers.json [--trace FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.recorder import TraceOptions, run_trace
from policies.window import percentile
from topics.traces import TraceRow

LOWER_IS_CONFIDENT = frozenset({"entropy"})


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` for ``correct``; None when only one class occurs."""
    from sklearn.metrics import roc_auc_score

    if len(set(correct)) < 2:
        return None
    return float(roc_auc_score(np.asarray(correct, dtype=int), np.asarray(scores, dtype=float)))


def model_metrics(rows: Sequence[TraceRow]) -> dict[str, object]:
    ok = [r for r in rows if r.error is None]
    correct = [r.correct for r in ok]
    latency = np.asarray([r.latency_ms for r in ok], dtype=float)
    seconds = latency.sum() / 1000
    features = sorted({name for r in ok for name in r.features})
    aurocs: dict[str, float | None] = {"confidence": auroc([r.confidence or 0.0 for r in ok], correct)}
    for name in features:
        sign = -1.0 if name in LOWER_IS_CONFIDENT else 1.0
        label = f"neg_{name}" if sign < 0 else name
        aurocs[label] = auroc([sign * r.features.get(name, 0.0) for r in ok], correct)
    return {
        "tier": rows[0].tier,
        "model": rows[0].model,
        "source": rows[0].source,
        "items": len(rows),
        "errors": len(rows) - len(ok),
        "accuracy": sum(correct) / len(rows),
        "auroc": aurocs,
        "latency_p50_ms": percentile(latency, 50) if ok else None,
        "latency_p95_ms": percentile(latency, 95) if ok else None,
        "prompt_tokens_per_s": sum(r.tokens_in for r in ok) / seconds if seconds > 0 else None,
        "cost_per_item": sum(r.cost for r in rows) / len(rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--portfolio", default="mmlu-llm")
    parser.add_argument("--n", type=int, default=200, help="MMLU questions (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", default="", help="trace file to write or resume (default: next to --json)")
    parser.add_argument("--json", default="llm_tiers.json", metavar="PATH")
    args = parser.parse_args(argv)

    console = Console(stderr=True)
    trace = args.trace or str(Path(args.json).with_suffix(".trace.jsonl"))
    started = time.monotonic()
    threads = os.cpu_count() or 1  # one model at a time: each may use the whole machine
    rows = run_trace(TraceOptions(args.portfolio, "mmlu", args.n, args.seed, trace, threads), console)
    by_tier: dict[str, list[TraceRow]] = {}
    for row in rows:
        by_tier.setdefault(row.tier, []).append(row)
    models = [model_metrics(group) for group in by_tier.values()]

    table = Table(title=f"MMLU, {args.n} questions (seed {args.seed})")
    for column in ("model", "accuracy", "AUROC conf", "best feature (AUROC)", "p50 ms", "p95 ms", "prompt tok/s"):
        table.add_column(column, justify="left" if column in ("model", "best feature (AUROC)") else "right")
    for m in models:
        scores = {k: v for k, v in m["auroc"].items() if v is not None}  # type: ignore[attr-defined]
        best = max(scores, key=lambda k: scores[k]) if scores else "-"
        table.add_row(
            str(m["model"]),
            f"{m['accuracy']:.1%}",
            f"{scores['confidence']:.3f}" if "confidence" in scores else "-",
            f"{best} ({scores[best]:.3f})" if scores else "-",
            f"{m['latency_p50_ms']:.0f}" if m["source"] == "live" else "-",
            f"{m['latency_p95_ms']:.0f}" if m["source"] == "live" else "-",
            f"{m['prompt_tokens_per_s']:.0f}" if m["prompt_tokens_per_s"] else "-",
        )
    Console().print(table)
    report = {
        "benchmark": "llm_tiers",
        "portfolio": args.portfolio,
        "dataset": "mmlu",
        "n": args.n,
        "seed": args.seed,
        "trace": trace,
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_s": time.monotonic() - started,
        "models": models,
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
