"""``tierflow demo``: a whole pipeline on an embedded broker and local Ray, with a report.

Streams held-out items of the portfolio's dataset through router → tiers →
verifier (escalating as the policy says) → results, shows progress, and prints
what happened per tier and overall. Everything it starts — broker, Ray, actors —
it stops, on success, error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.broker import EmbeddedBroker, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import Config, load_portfolio, with_policy_file
from infra.datasets import Item, load_items
from infra.errors import Interrupted
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray, stop_ray
from infra.report import RunFacts, build_report
from topics.admin import ensure_topics
from topics.errors import BrokerError, ConfigError, DataError
from topics.messages import Request
from workers.backends.base import Query, create_backend


@dataclass(frozen=True)
class DemoOptions:
    portfolio: str = "headlines"
    requests: int | None = None
    """None: the portfolio's ``demo_requests``."""
    rate: float = 0.0
    """Requests per second; 0 sends as fast as the broker takes them."""
    seed: int = 0
    timeout_s: float = 600.0
    json_path: str = ""
    run_dir: str = ""
    policy_path: str = ""
    """A fitted policy file to run instead of the portfolio's policies."""


def prepare_backends(config: Config, probe: Item, console: Console) -> tuple[Config, float]:
    """Load every tier once here (weights fetched, models trained) and time one query on each.

    Actors then start from the cache in seconds, and the timings give the user an
    estimate of the run's length before it starts: the second value returned is the
    seconds one request takes if it climbs every tier. An ``optional`` tier whose
    backend cannot load (its data are not on this machine) is left out, with the reason.
    """
    kept = []
    for tier in config.tiers:
        with console.status(f"preparing tier {tier.name} ({tier.backend})…"):
            started = time.perf_counter()
            backend = create_backend(tier.backend, tier.name, tier.options)
            try:
                backend.load()
            except (ConfigError, DataError) as exc:
                if not tier.optional:
                    raise
                console.print(f"  tier [bold]{tier.name}[/] left out: {exc}")
                continue
            loaded = time.perf_counter()
            asyncio.run(backend.infer([Query(probe.id, probe.text)]))
            per_query = time.perf_counter() - loaded
        console.print(
            f"  tier [bold]{tier.name}[/] ready in {loaded - started:.1f}s, {per_query * 1000:.0f} ms per query"
        )
        kept.append((tier, per_query))
    if not kept:
        raise ConfigError("no tier of the portfolio could be prepared")
    return replace(config, tiers=tuple(tier for tier, _ in kept)), sum(seconds for _, seconds in kept)


async def _send_paced(producer: RequestProducer, requests: list[Request], rate: float) -> None:
    """Send at ``rate`` per second (0: as fast as possible), each stamped with its real send time."""
    step = max(1, int(rate / 50)) if rate > 0 else 500  # ~50 sends a second keeps pacing smooth
    started = time.monotonic()
    for start in range(0, len(requests), step):
        if rate > 0:
            await asyncio.sleep(max(0.0, started + start / rate - time.monotonic()))
        now = time.time()
        await producer.send_many([msgspec.structs.replace(r, created_at=now) for r in requests[start : start + step]])


async def _resubmit(
    config: Config, kafka: dict[str, Any], producer: RequestProducer, lost: list[Request], rate: float
) -> None:
    """The broker lost its data: rebuild the topics (whoever is first), then send the unanswered requests
    again, at the rate the user asked for."""
    await ensure_topics(kafka, config.partitions(), config.broker.replication_factor)
    await _send_paced(producer, lost, rate)


async def stream(
    config: Config, bootstrap: str, items: list[Item], options: DemoOptions, console: Console
) -> dict[str, Any]:
    """Deploy the pipeline, stream ``items``, collect results, and build the report."""
    kafka = kafka_options(config.broker, bootstrap)
    pipeline = Pipeline(config, bootstrap)
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_ctrl_c() -> None:
        """First Ctrl-C: stop streaming and take everything down in order; a second one aborts."""
        interrupted.set()
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    try:
        with console.status("starting stage actors on Ray…"):
            await pipeline.start()
        collector = ResultCollector(
            kafka, config.layout, include_answers=True, fetch_max_wait_ms=config.broker.fetch_max_wait_ms
        )
        producer = RequestProducer(kafka, config.layout)
        await collector.start()
        await producer.start()
        sender: asyncio.Task[None] | None = None
        resubmitted = 0

        async def resubmit(ids: set[str]) -> None:
            nonlocal resubmitted
            resubmitted += len(ids)
            await _resubmit(config, kafka, producer, [r for r in requests if r.id in ids], options.rate)

        try:
            requests = [Request(id=item.id, input=item.text, created_at=0.0) for item in items]
            with Progress(
                TextColumn("streaming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as progress:
                bar = progress.add_task("results", total=len(requests))
                started = time.monotonic()
                sender = asyncio.create_task(_send_paced(producer, requests, options.rate))
                missing = await collector.wait_for(
                    {r.id for r in requests},
                    options.timeout_s,
                    lambda n: progress.advance(bar, n),
                    interrupted,
                    resubmit=resubmit,
                )
                if interrupted.is_set():
                    raise Interrupted("interrupted; everything started was stopped")
                wall = time.monotonic() - started
                await sender
            if missing:
                console.print(f"[red]{len(missing)} requests got no result within {options.timeout_s:.0f}s[/]")
            await asyncio.sleep(0.5)  # let the sink and late duplicates land
            await collector.poll(timeout_ms=200)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            await producer.stop()
            await collector.stop()
        c = collector.collected
        facts = RunFacts(
            sent=[r.id for r in requests],
            results=c.results,
            answers=list(c.answers.values()),
            labels={item.id: item.label for item in items},
            dead_letters=len(c.dead_letters),
            dead_ids=c.dead_ids,
            raw_duplicates=c.raw_duplicates,
            delivered_duplicates=_delivered_duplicates(config.results_path),
            wall_s=wall,
            broker_resets=collector.broker_resets,
            resubmitted=resubmitted,
        )
        return build_report(facts, config.layout.tiers)
    finally:
        with console.status("stopping stage actors…"):
            await pipeline.stop()


def _delivered_duplicates(path: str) -> int:
    if not path or not Path(path).exists():
        return 0
    ids = [json.loads(line)["id"] for line in Path(path).read_text().splitlines() if line]
    return len(ids) - len(set(ids))


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title="per tier")
    for column in ("tier", "answered", "accepted", "escalated", "accuracy", "cost"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for name, t in report["tiers"].items():
        acc = "-" if t["accuracy"] is None else f"{t['accuracy']:.1%}"
        table.add_row(name, str(t["answered"]), str(t["accepted"]), str(t["escalated"]), acc, f"{t['cost']:.3g}")
    console.print(table)
    lat = report["latency_ms"]
    acc = "-" if report["accuracy"] is None else f"{report['accuracy']:.1%}"
    overall = Table(title="overall", show_header=False)
    overall.add_column(justify="left")
    overall.add_column(justify="right")
    for key, value in [
        ("requests / results", f"{report['requests']} / {report['results']}"),
        ("status", ", ".join(f"{k} {v}" for k, v in sorted(report["status"].items()))),
        ("accuracy", acc),
        ("cost total / per request", f"{report['cost_total']:.3g} / {report['cost_per_request']:.3g}"),
        ("throughput", f"{report['throughput_rps']:.1f} req/s"),
        ("latency p50 / p95 / p99", f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} ms"),
        ("mean tiers per request", f"{report['mean_hops']:.2f}"),
        ("lost / dead letters", f"{report['lost']} / {report['dead_letters']}"),
        # delivered twice is the promise (0); raw duplicates are repeated hops the sink absorbed
        ("duplicates delivered / raw", f"{report['duplicates']} / {report['raw_duplicates']}"),
    ]:
        overall.add_row(key, value)
    if report["broker_resets"]:
        overall.add_row("broker restarts / re-sent", f"{report['broker_resets']} / {report['resubmitted']}")
    console.print(overall)


def run_demo(options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """The whole demo, synchronously; returns the report."""
    console = console or Console()
    run_dir = Path(options.run_dir or tempfile.mkdtemp(prefix="tierflow-demo-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    config = load_portfolio(options.portfolio)
    if options.policy_path:
        config = with_policy_file(config, options.policy_path)
    config = replace(config, namespace=f"demo-{uuid.uuid4().hex[:8]}", results_path=str(run_dir / "results.jsonl"))
    requests = options.requests or config.demo_requests
    console.print(f"[bold]tierflow demo[/]: portfolio [bold]{options.portfolio}[/], {requests} requests")
    console.print(f"  run dir (broker log, delivered results): {run_dir}")
    items = load_items(config.dataset, requests, options.seed)
    config, climb_s = prepare_backends(config, items[0], console)
    if climb_s * requests > 20:
        console.print(
            f"  expect up to ~{climb_s * requests / 60:.0f} min ({climb_s:.1f}s per request that climbs every tier; "
            "less when cheap tiers answer); --requests N changes the size"
        )
    broker = EmbeddedBroker(log_dir=run_dir)
    ray_started = False
    try:
        bootstrap = broker.start()
        console.print(f"  embedded broker on {bootstrap} (pid {broker.pid})")
        with console.status("starting Ray on 127.0.0.1…"):
            ray_started = start_ray(config.ray)
        report = asyncio.run(stream(config, bootstrap, items, options, console))
    except ConnectionError as exc:
        raise BrokerError(f"lost the broker: {exc}") from exc
    finally:
        stop_ray(ray_started)
        broker.stop()
    report["portfolio"] = options.portfolio
    report["dataset"] = config.dataset
    print_report(report, console)
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {options.json_path}")
    return report
