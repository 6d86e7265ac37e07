"""``tierflow up``: deploy a config's pipeline through its supervisor and follow it until Ctrl-C or SIGTERM.

The pools belong to the namespace's supervisor (:mod:`infra.supervisor`), not to this
process: ``up`` starts the supervisor, or attaches to the one already running, and prints
counters as it goes. Ctrl-C stops a deployment this ``up`` started (draining the embedded
broker first) and only detaches from one it attached to; ``--detach`` returns once every
pool is ready. Killed outright, ``up`` takes nothing with it where Ray runs as a cluster
(``[ray] address``) and the broker outside it; a local Ray and the embedded broker are this
process's children and end with it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from infra.cli.common import Subparsers, note
from infra.config import Config, load_config, with_policy_file
from infra.drain import DrainResult, drain, split_lag
from topics.errors import ConfigError, TierflowError

Stats = dict[str, list[dict[str, Any]]]
READY_S = 150.0
"""How long ``up`` waits for every pool to be ready (the supervisor's own bound is 120 s)."""
STATS_TIMEOUT_S = 60.0
DETACH_NEEDS = (
    "--detach needs a deployment that outlives this process: set [ray] address to a running Ray cluster and "
    'use a broker outside it (broker.provider = "external" or "docker"); a local Ray and the embedded broker '
    "end with tierflow up"
)

EMBEDDED_MB_PER_MILLION = 6000.0
"""Resident memory the embedded broker gains per million requests of the simulated portfolio run by the
real pipeline at 200 requests/s (200-byte inputs, 1.7 tiers per request: 5.4 records each), measured by
``load_tests/broker_memory.py --pipeline --rate 200`` on the 2-core machine. The slower requests come,
the smaller the batches the stages produce, and Tansu keeps about 1 KB per batch besides the records,
so this is the figure for a laptop's trickle; at full speed it is half (``..._AT_FULL_SPEED``). The
warning's "room left" uses this one: it errs towards warning early."""
EMBEDDED_MB_PER_MILLION_AT_FULL_SPEED = 3000.0
"""The same at full speed (~3,000 requests/s, batches of hundreds): ``broker_memory.py --pipeline``."""
EMBEDDED_BATCHES_PER_PARTITION = 20_000
"""Batches one partition of the embedded broker holds before a fetch takes a second or more (0.33 s at
20,000, 5 s at 25,000, over 20 s at 30,000: ``load_tests/broker_batches.py``). Every acknowledged send
and every stage batch adds one batch per partition it touches, so small frequent sends reach it first."""
WARN_SHARE = 0.8
"""Share of ``broker.memory_warn_mb`` at which ``tierflow up`` first warns, early enough to plan."""
DRAIN_NOTE_EVERY_S = 5.0
"""How often a drain says how much is left."""
NOT_WARNED, WARNED_NEAR, WARNED_PAST = 0, 1, 2
"""What :func:`memory_warning` has said so far: nothing, "nearing the bound", "past it"."""


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the pipeline of a config file until stopped (Ctrl-C)",
        description="Start (or join) the configured broker and Ray, deploy every stage pool, "
        "and run until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML config (required)")
    parser.add_argument(
        "--policy",
        default="",
        metavar="FILE",
        help="run a fitted policy file (tierflow fit) instead of the config's policies (default: none)",
    )
    parser.add_argument(
        "--status-every", type=float, default=10.0, metavar="S", help="print counters every S seconds (default 10)"
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="return once every pool is ready and leave the deployment running; tierflow down stops it "
        "(needs [ray] address and a broker outside this process)",
    )


def run(args: argparse.Namespace) -> int:
    """Load (and so check) the config before starting anything: a config that cannot run starts no broker."""
    config = load_config(args.config)
    if args.policy:
        config = with_policy_file(config, args.policy)
    from infra.broker import EmbeddedBroker, make_provider
    from infra.ray_cluster import start_ray, stop_ray
    from workers.controller_actor import resolve_keys

    provider = make_provider(config.broker)
    if args.detach and (isinstance(provider, EmbeddedBroker) or not config.ray.address):
        raise ConfigError(DETACH_NEEDS)
    ray_started, outcome = False, None
    try:
        bootstrap = provider.start()
        note(
            f"broker {bootstrap}, namespace {config.namespace}; send with: "
            f"tierflow send --config {args.config} --bootstrap {bootstrap}"
        )
        # Only the embedded broker is ours to watch: an external or docker Kafka has retention.
        broker_rss = provider.rss_mb if isinstance(provider, EmbeddedBroker) else None
        if broker_rss is not None:
            note(embedded_broker_note(config.broker.memory_warn_mb))
        if config.control.enabled and not resolve_keys(config.control):
            names = ", ".join(config.control.keys.values())
            note(f"no control key set ({names}): budget commands will be refused")
        ray_started = start_ray(config.ray)
        drain_s = config.broker.drain_s if broker_rss is not None else 0.0  # only a broker that forgets
        outcome = asyncio.run(_serve(config, bootstrap, args.status_every, broker_rss, drain_s, args.detach))
    finally:
        stop_ray(ray_started)
        provider.stop()
    return 1 if outcome is not None and (outcome.requests_unfinished or outcome.unwritten or outcome.error) else 0


async def _serve(
    config: Config,
    bootstrap: str,
    status_every: float,
    broker_rss: Callable[[], float | None] | None = None,
    drain_s: float = 0.0,
    detach: bool = False,
) -> DrainResult | None:
    """Start or attach to the supervisor and follow it until Ctrl-C or SIGTERM; every ``status_every`` print the
    counters and check the embedded broker's memory. Stopping a deployment this call started: with ``drain_s``,
    finish what the broker holds first (a second signal stops at once) and return how far that got."""
    from infra.broker import kafka_options
    from infra.supervisor import await_ready, start_supervisor, stop_supervisor

    stop, stop_now = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            stop_now.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    supervisor, owned = start_supervisor(config, bootstrap)

    async def stats() -> Stats:
        found: Stats = await asyncio.wait_for(supervisor.stats.remote(), timeout=STATS_TIMEOUT_S)
        return found

    try:
        if not owned:
            _check_attached(await asyncio.wait_for(supervisor.describe.remote(), STATS_TIMEOUT_S), config, bootstrap)
        await asyncio.to_thread(await_ready, supervisor, READY_S)
        if detach:
            owned = False
            note(f"pipeline ready; detached (tierflow down --config <file> stops namespace {config.namespace})")
            return None
        if owned:
            after = f" (after finishing what the broker holds, up to {drain_s:g} s)" if drain_s else ""
            note(f"pipeline ready; Ctrl-C stops it{after}")
        else:
            note("pipeline ready; Ctrl-C detaches and leaves it running (tierflow down stops it)")
        warned = NOT_WARNED
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=status_every)
            except TimeoutError:
                rss = broker_rss() if broker_rss is not None else None
                print(status_line(await stats(), rss), file=sys.stderr)
                message, warned = memory_warning(rss, config.broker.memory_warn_mb, warned)
                if message:
                    note(message)
        if not owned:
            note(f"detached; namespace {config.namespace} keeps running (tierflow down stops it)")
            return None
        if drain_s <= 0:
            return None
        outcome = await _drain(stats, config, kafka_options(config.broker, bootstrap), drain_s, stop_now)
        note(outcome.summary())
        return outcome
    finally:
        if owned:
            await asyncio.to_thread(stop_supervisor, supervisor)


def _check_attached(state: Mapping[str, Any], config: Config, bootstrap: str) -> None:
    """Attaching is only right to the same broker; a different config is said, not silently followed."""
    from infra.supervisor import config_digest

    namespace = config.namespace
    if state["bootstrap"] != bootstrap:
        raise ConfigError(
            f"namespace {namespace} already runs against broker {state['bootstrap']}, not {bootstrap}: "
            "stop it first (tierflow down --config <file>) or use another namespace"
        )
    since = time.strftime("%H:%M:%S", time.localtime(state["started_at"]))
    note(f"attached to the supervisor of namespace {namespace} (running since {since})")
    if state["digest"] != config_digest(config):
        note("its config differs from this one, which is not applied: tierflow down, then up, to change it")


async def _drain(
    stats: Callable[[], Any], config: Config, kafka: dict[str, Any], drain_s: float, stop_now: asyncio.Event
) -> DrainResult:
    """Keep the stages running until the broker holds nothing unfinished, ``drain_s`` passed, or ``stop_now``."""
    from infra.status.reader import StatusReader

    note(
        f"stopping: finishing what the embedded broker holds (up to {drain_s:g} s, broker.drain_s); "
        "requests sent from now on may go unanswered; Ctrl-C again stops at once"
    )
    reader = StatusReader(kafka, config)
    try:
        await reader.start()
    except TierflowError as exc:
        return DrainResult(False, 0.0, error=f"cannot read what is left ({exc})")
    noted = 0.0

    def progress(waited: float, lag: Mapping[str, int]) -> None:
        nonlocal noted
        if waited - noted >= DRAIN_NOTE_EVERY_S:
            noted = waited
            unfinished, unwritten = split_lag(lag)
            note(f"draining: {sum(unfinished.values()):,} requests unfinished, {unwritten:,} results unwritten")

    async def read_lag() -> Mapping[str, int]:
        return (await reader.lag())[0]

    async def consumed() -> int:
        return sum(r.get("consumed", 0) for replicas in (await stats()).values() for r in replicas)

    try:
        return await drain(read_lag, consumed, drain_s, stop_now=stop_now, on_progress=progress)
    finally:
        await reader.stop()


def status_line(stats: dict[str, list[dict[str, Any]]], broker_mb: float | None = None) -> str:
    """One line per interval — time, then per pool: replicas, consumed, dead letters — for a log to keep.

    With ``broker_mb`` (the embedded broker's resident memory) it ends with it, so a log shows the growth.
    """
    parts = []
    for pool, replicas in stats.items():
        consumed = sum(r.get("consumed", 0) for r in replicas)
        dead = sum(r.get("dead_letters", 0) for r in replicas)
        parts.append(f"{pool}: {len(replicas)}x in={consumed} dlq={dead}")
    if broker_mb is not None:
        parts.append(f"broker {broker_mb:,.0f} MB")
    return time.strftime("%H:%M:%S ") + " | ".join(parts)


def embedded_broker_note(bound_mb: int) -> str:
    """The one line ``tierflow up`` says at start on the embedded broker: what it is for, and what it costs.

    Said up front because its limits are silent until they bite: it loses every record on a
    restart, and it keeps every record until the machine runs out of memory.
    """
    watch = f"warns at {bound_mb:,} MB (broker.memory_warn_mb)" if bound_mb > 0 else "memory warning off"
    return (
        "embedded broker: in memory, no retention, for a laptop, tests and demos — use an external Kafka "
        f"cluster for anything that must outlive this process; ~{EMBEDDED_MB_PER_MILLION_AT_FULL_SPEED:,.0f} to "
        f"{EMBEDDED_MB_PER_MILLION:,.0f} MB per million requests (more when they come slowly), {watch}; "
        f"its fetches slow to seconds once a partition holds ~{EMBEDDED_BATCHES_PER_PARTITION:,} batches"
    )


def _about(count: float) -> str:
    """``count`` to two significant figures (``68,000``): a projection, not a promise."""
    if count < 100:
        return f"{count:.0f}"
    digits = math.floor(math.log10(count)) - 1
    return f"{round(count, -digits):,.0f}"


def memory_warning(
    rss_mb: float | None, bound_mb: int, warned: int, mb_per_million: float = EMBEDDED_MB_PER_MILLION
) -> tuple[str | None, int]:
    """The warning to give for the embedded broker at ``rss_mb`` under ``bound_mb``, if any, and what was said.

    ``warned`` is what was said so far (``NOT_WARNED``, ``WARNED_NEAR``, ``WARNED_PAST``); pass back the
    returned value at the next sample. It warns once at ``WARN_SHARE`` of the bound, to plan a move, and
    once more when the bound is passed — never at every sample: an operator who read it once needs
    no log full of it. A broker that jumps past the bound between two samples gets only the second.
    ``bound_mb`` 0 disables it; ``rss_mb`` ``None`` (no broker process to measure) says nothing.
    """
    if bound_mb <= 0 or rss_mb is None:
        return None, warned
    level = WARNED_PAST if rss_mb > bound_mb else WARNED_NEAR if rss_mb >= WARN_SHARE * bound_mb else NOT_WARNED
    if level <= warned:
        return None, warned
    what_to_do = (
        "restart tierflow up at a quiet moment (the broker forgets every record, so only once clients "
        'hold no unanswered requests) or move to an external Kafka cluster (broker.provider = "external")'
    )
    if level == WARNED_NEAR:
        room = ""
        if mb_per_million > 0:
            room = f", room for about {_about((bound_mb - rss_mb) / mb_per_million * 1e6)} more requests"
        message = (
            f"embedded broker at {rss_mb:,.0f} MB, {rss_mb / bound_mb:.0%} of broker.memory_warn_mb = {bound_mb:,} "
            f"(in memory, no retention: it grows up to ~{mb_per_million:,.0f} MB per million requests{room}); "
            f"plan to {what_to_do}"
        )
    else:
        message = (
            f"embedded broker at {rss_mb:,.0f} MB, past broker.memory_warn_mb = {bound_mb:,}: it keeps every "
            f"record and grows until this machine runs out of memory; {what_to_do}, "
            "or raise memory_warn_mb if the machine has room"
        )
    return message, level
