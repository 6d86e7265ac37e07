"""Does tierflow learn from its own traffic? The whole loop on a stream whose queries shift.

One embedded broker and one local Ray (started here, stopped in ``finally``), the pipeline on
a simulated three-tier ladder (small / medium / large at 1 : 4 : 16 cost). Its live policy is
``threshold`` at 0.8 on small and medium: right for the easy traffic it was set on, where each
tier up is better. Then the traffic shifts: half the queries become ``hard:``, on which the
medium tier is barely better than the small one (accuracy 0.35 against 0.3; large keeps 0.9),
so the live cascade pays for medium calls that rarely help. Exploration is on (``--explore``):
that share of requests also runs on every tier the policy skipped.

1. ``before``: ``--requests`` fresh shifted requests through the live policy. A labeller that
   knows the simulated gold answer labels every answer it sees (the delivered one and every
   other tier's, exploration copies included) on ``<ns>.feedback``.
2. The trace is built from the topics (``tierflow trace --from-kafka``'s functions), and
   ``--method`` (default ``frugalgpt``) is fitted on it (``tierflow fit``'s function) for the
   budget the live policy spent per request: a candidate that must not cost more.
3. ``shadow_estimate``: the candidate against the live policy on the same trace
   (``tierflow eval --shadow``'s function): off-policy accuracy and cost with 95% intervals.
4. ``canary``: the candidate is pushed (``tierflow policy push --canary``'s command) and
   decides ``--canary`` of ``--requests`` fresh requests; measured on the canary's share.
5. ``after``: the candidate is pushed live and runs ``--requests`` fresh requests:
   ``shadow_actual`` is its measured accuracy and cost there, ``after`` the same figures.

Accuracy is scored here against the simulated gold label, cost is each result's
``total_cost`` (the delivered path; the exploration copies' spend is reported apart, as
``exploration_cost_per_request``). Goals: ``after`` beats ``before`` in accuracy at no more
cost, and ``shadow_actual`` lies inside the shadow estimate's intervals.

Usage::

    .venv/bin/python load_tests/learning_loop.py --json load_tests/results/learning_loop.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from infra.broker import EmbeddedBroker, kafka_options
from infra.cli.feedback import _send as send_labels
from infra.client import RequestProducer, ResultCollector
from infra.config import Config, RayConfig, parse_config, with_policy_file
from infra.control_client import new_command, send_command, trusted_keys
from infra.lab.evaluate import LabOptions, fit
from infra.lab.shadow import shadow_report
from infra.lab.stream_trace import StreamJoin, read_stream, stream_trace
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray, stop_ray
from policies.file import PolicyFile, load_policy
from topics import Request, Result
from topics.admin import delete_topics
from topics.control import CommandAction
from topics.feedback import Feedback
from topics.rollout import Rollout, RolloutMode, policy_digest
from topics.traces import write_trace
from workers.backends.simulated import simulated_gold_label

KEY_ENV = "TIERFLOW_CONTROL_KEY"
TIERS = (("small", 0.8, 0.3, 0.001), ("medium", 0.88, 0.35, 0.004), ("large", 0.93, 0.9, 0.016))
"""(name, accuracy, accuracy on ``hard:`` queries, cost per call)."""
LIVE_THRESHOLDS = {"small": 0.8, "medium": 0.8}
WAIT_S = 180.0


def live_policy(path: Path) -> str:
    names = tuple(name for name, *_ in TIERS)
    PolicyFile("threshold", "post-hoc", names, "cheapest_first", {}, "threshold",
               {"thresholds": LIVE_THRESHOLDS}).save(path)  # fmt: skip
    return str(path)


def ladder(namespace: str, policy_file: str, explore: float, workdir: Path) -> Config:
    tiers = [
        {"name": name, "backend": "simulated", "cost": cost, "partitions": 2, "num_cpus": 0.1,
         "options": {"accuracy": acc, "hard_accuracy": hard, "cost": cost, "seed": seed}}
        for seed, (name, acc, hard, cost) in enumerate(TIERS, start=1)
    ]  # fmt: skip
    doc = parse_config(
        {
            "namespace": namespace,
            "results_path": str(workdir / "results.jsonl"),
            "broker": {"session_timeout_ms": 2000, "fetch_max_wait_ms": 20},
            "router": {"partitions": 2},
            "verifier": {"partitions": 2},
            "control": {"window_s": 3.0},
            "exploration": {"share": explore, "max_cost_share": 1.0},
            "tiers": tiers,
        }
    )
    return with_policy_file(doc, policy_file)  # as load_config applies a config's policy file


def shifted(prefix: str, n: int, seed: int) -> list[Request]:
    """``n`` fresh requests, half of them ``hard:`` (drawn, seeded)."""
    gen = np.random.default_rng(seed)
    now = time.time()
    return [
        Request(id=f"{prefix}-{i}", input=("hard: " if gen.random() < 0.5 else "") + f"q {i}", created_at=now)
        for i in range(n)
    ]


async def stream(config: Config, kafka: dict[str, Any], requests: list[Request], rate: float) -> list[Result]:
    """Send ``requests`` at ``rate`` per second; every result (a missing one fails the run)."""
    producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
    await producer.start()
    await collector.start()
    try:
        step = max(1, int(rate / 10))
        for start in range(0, len(requests), step):
            await producer.send_many(requests[start : start + step])
            await collector.poll(timeout_ms=0)
            await asyncio.sleep(0.1)
        missing = await collector.wait_for({r.id for r in requests}, WAIT_S)
        if missing:
            raise RuntimeError(f"{len(missing)} requests got no result, e.g. {sorted(missing)[:3]}")
        return [collector.collected.results[r.id] for r in requests]
    finally:
        await producer.stop()
        await collector.stop()


def measured(results: list[Result]) -> dict[str, float]:
    return {
        "requests": len(results),
        "accuracy": float(np.mean([r.output == simulated_gold_label(r.request_id) for r in results])),
        "cost_per_request": float(np.mean([r.total_cost for r in results])),
    }


def labels_for(join: StreamJoin, ids: set[str]) -> list[Feedback]:
    """What a labeller who knows the gold answers says of every answer of ``ids`` it can see."""
    now, out = time.time(), []
    for rid in ids:
        gold = simulated_gold_label(rid)
        result = join.results.get(rid)
        if result is not None:
            out.append(Feedback(rid, "gold", now, correct=result.output == gold))
        seen = join.answers.get(rid, {}) | join.copies.get(rid, {})
        out += [Feedback(rid, "gold", now, correct=a.output == gold, tier=tier) for tier, a in seen.items()]
    return out


def copies_cost(join: StreamJoin, ids: set[str]) -> float:
    return sum(a.cost for rid in ids for a in join.copies.get(rid, {}).values()) / max(1, len(ids))


async def push(pipeline: Pipeline, kafka: dict[str, Any], path: str, mode: RolloutMode, share: float = 1.0) -> None:
    policy = load_policy(path)
    text = json.dumps(policy.to_json(), sort_keys=True, separators=(",", ":"))
    rollout = Rollout(text, policy_digest(text), mode, share, policy.name)
    command = new_command(CommandAction.PUSH_POLICY, "default", os.environ[KEY_ENV].encode(), now=time.time(),
                          issuer="learning_loop", rollout=rollout)  # fmt: skip
    config = pipeline.config
    reply = await send_command(kafka, config.layout.control, command, 30.0, trusted=trusted_keys(config))
    if not reply.accepted:
        raise RuntimeError(f"the controller refused the push: {reply.reason}")
    await asyncio.sleep(1.0)  # every replica applies it at its next batch


async def loop(bootstrap: str, args: argparse.Namespace, workdir: Path, console: Console) -> dict[str, Any]:
    live_file = live_policy(workdir / "live.json")
    config = ladder(f"learn-{secrets.token_hex(4)}", live_file, args.explore, workdir)
    kafka = kafka_options(config.broker, bootstrap)
    pipeline = Pipeline(config, bootstrap)
    report: dict[str, Any] = {"requests_per_phase": args.requests, "explore": args.explore, "method": args.method}
    try:
        await pipeline.start()
        console.print(f"[1/5] before: {args.requests} shifted requests through the live policy")
        before = await stream(config, kafka, shifted("before", args.requests, 1), args.rate)
        ids = {r.request_id for r in before}
        join = await read_stream(kafka, config.layout, config.partitions())
        await send_labels(config, bootstrap, labels_for(join, ids))
        report["before"] = measured(before) | {"exploration_cost_per_request": copies_cost(join, ids)}

        console.print("[2/5] trace from the topics, and a fit for the live policy's budget")
        join = await read_stream(kafka, config.layout, config.partitions())
        trace = stream_trace(join, one_right_answer=False)
        trace_path = workdir / "stream.jsonl"
        write_trace(trace_path, trace.rows)
        candidate_path = str(workdir / "candidate.json")
        budget = report["before"]["cost_per_request"]
        fitted = fit(LabOptions(str(trace_path)), args.method, budget, None, candidate_path, console)
        report["trace"] = {"requests": trace.requests, "explored": trace.explored, "rows": len(trace.rows)}
        report["candidate"] = {"name": fitted.name, "fitted": {k: fitted.fitted.get(k) for k in ("setting", "train")}}

        console.print("[3/5] shadow estimate of the candidate on the same traffic")
        shadow = shadow_report(str(trace_path), candidate_path, live_file, "dr").as_dict()
        report["live_estimate"] = shadow["live"]
        report["shadow_estimate"] = shadow["candidate"]

        console.print(f"[4/5] canary on {args.canary:.0%} of {args.requests} fresh requests")
        await push(pipeline, kafka, candidate_path, RolloutMode.CANARY, args.canary)
        canary = await stream(config, kafka, shifted("canary", args.requests, 2), args.rate)
        report["canary"] = {
            "canary": measured([r for r in canary if r.canary]),
            "rest": measured([r for r in canary if not r.canary]),
        }

        console.print(f"[5/5] pushed live: {args.requests} fresh requests")
        await push(pipeline, kafka, candidate_path, RolloutMode.LIVE)
        after = await stream(config, kafka, shifted("after", args.requests, 3), args.rate)
        join = await read_stream(kafka, config.layout, config.partitions())
        ids = {r.request_id for r in after}
        report["after"] = measured(after) | {"exploration_cost_per_request": copies_cost(join, ids)}
        report["shadow_actual"] = measured(after)
    finally:
        await pipeline.stop()
        await delete_topics(kafka, config.layout.all_topics())
    return report


def goals(report: dict[str, Any]) -> dict[str, bool]:
    before, after, estimate, actual = (report[k] for k in ("before", "after", "shadow_estimate", "shadow_actual"))
    low, high = estimate["accuracy_ci"]
    c_low, c_high = estimate["cost_ci"]
    return {
        "after_more_accurate": after["accuracy"] > before["accuracy"],
        "after_no_more_cost": after["cost_per_request"] <= before["cost_per_request"],
        "actual_accuracy_in_interval": low <= actual["accuracy"] <= high,
        "actual_cost_in_interval": c_low <= actual["cost_per_request"] <= c_high,
    }


async def main_async(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    os.environ.setdefault(KEY_ENV, secrets.token_hex(16))
    workdir = Path(tempfile.mkdtemp(prefix="tierflow-learn-"))
    broker = EmbeddedBroker(str(workdir))
    started = False
    try:
        bootstrap = broker.start()
        started = start_ray(RayConfig(num_cpus=16))
        report = await loop(bootstrap, args, workdir, console)
    finally:
        stop_ray(started)
        broker.stop()
    report["goals"] = goals(report)
    report["cores"] = os.cpu_count()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="", metavar="PATH", help="write the report here (default: only print it)")
    parser.add_argument("--requests", type=int, default=3000, help="fresh requests per phase (default 3000)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second sent (default 150)")
    parser.add_argument("--explore", type=float, default=0.25, help="exploration share (default 0.25)")
    parser.add_argument("--canary", type=float, default=0.2, help="the canary's share of requests (default 0.2)")
    parser.add_argument("--method", default="frugalgpt", help="the lab method refitted (default frugalgpt)")
    args = parser.parse_args()
    console = Console(stderr=True)
    with contextlib.suppress(KeyboardInterrupt):
        report = asyncio.run(main_async(args, console))
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return 0 if all(report["goals"].values()) else 1
    return 130


if __name__ == "__main__":
    sys.exit(main())
