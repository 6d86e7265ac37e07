"""Does a healthy broker ever pass for one that lost its data? Consecutive demos beside a CPU hog.

The client used to compare the topics' end offsets with what it had read; Tansu's
reported end can trail records a fetch already returned, so on a busy machine the
demo cried "the broker lost its data" and re-sent hundreds of requests. The signal
is now the broker's cluster id. This runs ``tierflow demo`` ``--runs`` times in a
row, optionally with one busy-looping process per ``--hogs``, and counts the alarms
printed, the broker resets and requests re-sent that each report records, and the
requests lost or delivered twice.

    python load_tests/false_alarms.py --runs 20 --requests 2000 --hogs 1 --json false_alarms.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ALARM = "lost its data"


def _hog(stop_at: float) -> None:
    """Burn one core until ``stop_at`` (what a busy neighbour does)."""
    while time.time() < stop_at:
        sum(i * i for i in range(10_000))


def one_run(requests: int, portfolio: str, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tierflow-false-alarms-") as folder:
        report_path = Path(folder) / "report.json"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "infra.cli", "demo", "--portfolio", portfolio, "--requests", str(requests),
             "--json", str(report_path), "--run-dir", folder],
            capture_output=True, text=True, timeout=timeout_s, env={**os.environ, "COLUMNS": "200"}, check=False,
        )  # fmt: skip
        wall = time.monotonic() - started
        output = proc.stdout + proc.stderr
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "alarms_printed": output.count(ALARM),
        "broker_resets": report.get("broker_resets"),
        "resubmitted": report.get("resubmitted"),
        "results": report.get("results"),
        "lost": report.get("lost"),
        "delivered_duplicates": report.get("duplicates"),
        "raw_duplicates": report.get("raw_duplicates"),
        "throughput_rps": report.get("throughput_rps"),
        "p99_ms": (report.get("latency_ms") or {}).get("p99"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="consecutive demo runs (default 20)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per run (default 2000)")
    parser.add_argument("--portfolio", default="headlines", help="demo portfolio (default headlines)")
    parser.add_argument("--hogs", type=int, default=1, help="busy-looping processes beside the runs (default 1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take (default 900)")
    parser.add_argument("--json", type=Path, help="also write the runs as JSON")
    args = parser.parse_args()
    console = Console()
    hogs = [
        multiprocessing.Process(target=_hog, args=(time.time() + args.runs * args.timeout,), daemon=True)
        for _ in range(args.hogs)
    ]
    for hog in hogs:
        hog.start()
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.runs):
            run = one_run(args.requests, args.portfolio, args.timeout)
            runs.append(run)
            console.print(f"run {i + 1}/{args.runs}: {run}")
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join(timeout=5)
    table = Table(title=f"{args.runs} demos of {args.requests} requests beside {args.hogs} CPU hog(s)")
    for column in ("run", "exit", "alarms", "resets", "re-sent", "results", "lost", "twice", "raw dup", "req/s"):
        table.add_column(column, justify="right")
    for i, r in enumerate(runs, 1):
        table.add_row(
            str(i), str(r["exit_code"]), str(r["alarms_printed"]), str(r["broker_resets"]), str(r["resubmitted"]),
            str(r["results"]), str(r["lost"]), str(r["delivered_duplicates"]), str(r["raw_duplicates"]),
            str(r["throughput_rps"]),
        )  # fmt: skip
    console.print(table)
    summary = {
        "runs": args.runs,
        "requests_per_run": args.requests,
        "hogs": args.hogs,
        "cpus": os.cpu_count(),
        "alarms_printed": sum(r["alarms_printed"] for r in runs),
        "resubmitted": sum(r["resubmitted"] or 0 for r in runs),
        "lost": sum(r["lost"] or 0 for r in runs),
        "delivered_duplicates": sum(r["delivered_duplicates"] or 0 for r in runs),
        "failed_runs": sum(r["exit_code"] != 0 for r in runs),
        "per_run": runs,
    }
    console.print({k: v for k, v in summary.items() if k != "per_run"})
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary["alarms_printed"] == summary["resubmitted"] == summary["failed_runs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
