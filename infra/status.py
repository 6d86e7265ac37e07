"""``tierflow status``: throughput, latency, cost against target, per-tier load and lag, controller state.

Everything is read from Kafka, so the command works from any machine that reaches
the brokers (no Ray, no consumer group joined, nothing committed):

* ``<ns>.results`` — the tail of every partition (read backwards in chunks until the
  window is covered) gives the window's results per second, status counts, latency
  percentiles, cost per request and per second, escalation rate and tier shares.
* lag — per stage pool (consumer group ``<ns>.<pool>``, pools ``router``, ``verifier``,
  ``worker.<tier>`` and ``sink`` when the config has a results file): end offset minus
  committed offset, summed over the partitions of the pool's topics. A group with no
  committed offset on a partition counts that partition from its beginning. Committed
  offsets are read by a consumer created with the group id that never subscribes
  (Tansu's admin OffsetFetch reply cannot be parsed by aiokafka's admin client); end
  offsets are what the broker reports (Tansu may report the base offset of its last
  batch plus one rather than the high watermark).
* ``<ns>.control`` — the newest ControllerReport, the newest PolicyUpdate and the last
  few ControlReplies, read backwards from the end.

Records that do not decode are skipped and counted.

``--once --json`` prints one JSON object:

``namespace``, ``bootstrap``, ``at`` (epoch seconds of the snapshot), ``window_s``;
``results``: ``count`` (results completed in the window), ``rate`` (count / window_s),
``by_status`` {status: count}, ``latency_ms`` {``p50``, ``p95``, ``p99``} (end to end),
``cost_per_request`` (mean total cost), ``cost_per_second`` (total cost / window_s),
``escalation_rate`` (share with more than one tier on their path), ``mean_confidence``,
``tier_share`` {tier: share of the window's results it answered; every configured tier;
rejected results have no tier, so the shares may sum below 1}, ``tier_answers_per_s``
{tier: answers it computed per second, from the results' paths};
``lag`` {pool: records not yet committed}; ``uncommitted_pools`` [pools whose group has
committed nothing on a partition that holds records: their lag counts from its beginning];
``controller``: null when no ControllerReport was found, else ``targets``
{cost_per_request, cost_per_second, latency_ms, latency_quantile, quality_floor},
``observed`` (the report's own window: requests, window_s, rate, cost_per_request,
cost_per_second, latency_ms, escalation_rate, mean_confidence, tier_share,
tier_latency_ms), ``version``, ``lam``, ``mu``, ``paused``, ``pinned``, ``rejected``
{reason: count}, ``at``, ``age_s``, ``thresholds`` (of the newest PolicyUpdate, or null), ``base``
(the base thresholds the controller steers from);
``policy``: the newest PolicyUpdate {version, thresholds, allowed_tiers, reason,
issued_at, lam, mu, pinned} or null;
``replies``: the newest ControlReplies, newest first [{offset (of the command answered),
accepted, reason, key_id, seq, at}];
``cost_vs_target`` {cost_per_request | cost_per_second | latency_ms | quality_floor:
{``target``, ``observed`` (this window's; latency at the target's ``quantile``, a key of
its own there), ``error_pct`` (observed vs target, + means above)}} for each target the controller holds;
``undecodable`` {``results``, ``control``}: records skipped; ``truncated``: true when
some partition had more records in the window than one read takes
(:data:`MAX_RECORDS_PER_PARTITION`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from infra.config import Config
from topics.control import ControllerReport, ControlReply, PolicyUpdate, Targets, decode_control
from topics.errors import BrokerError, ConfigError, DecodeError
from topics.messages import Result

DEFAULT_WINDOW_S = 10.0
DEFAULT_INTERVAL_S = 2.0
REPLIES_SHOWN = 5
CHUNK = 1000
"""Records per partition read per step when walking a topic backwards."""
MAX_RECORDS_PER_PARTITION = 100_000
"""The most records one snapshot reads from one results partition (bounds memory and time)."""
CONTROL_SCAN_LIMIT = 20_000
"""How far back the control topic is searched for a report and a policy update."""
READ_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- pure computing


def in_window(results: Iterable[Result], now: float, window_s: float) -> list[Result]:
    """The results completed in the last ``window_s`` seconds before ``now`` (later ones too: clock skew)."""
    cutoff = now - window_s
    return [r for r in results if r.completed_at >= cutoff]


def window_stats(results: Sequence[Result], window_s: float, tiers: Sequence[str] = ()) -> dict[str, Any]:
    """The ``results`` object of the JSON from the results of one window (already filtered)."""
    from infra.report import percentiles  # numpy: imported when used, so building the CLI parser stays quick

    count = len(results)
    total_cost = sum(r.total_cost for r in results)
    answered: Counter[str] = Counter(r.tier for r in results if r.tier)
    computed: Counter[str] = Counter(tier for r in results for tier in r.path)
    names = list(tiers) + sorted(set(answered) | set(computed) - set(tiers))
    return {
        "count": count,
        "rate": count / window_s if window_s > 0 else 0.0,
        "by_status": dict(sorted(Counter(str(r.status) for r in results).items())),
        "latency_ms": percentiles([r.latency_ms for r in results]),
        "cost_per_request": total_cost / count if count else 0.0,
        "cost_per_second": total_cost / window_s if window_s > 0 else 0.0,
        "escalation_rate": sum(1 for r in results if len(r.path) > 1) / count if count else 0.0,
        "mean_confidence": sum(r.confidence for r in results) / count if count else 0.0,
        "tier_share": {t: answered[t] / count if count else 0.0 for t in names},
        "tier_answers_per_s": {t: computed[t] / window_s if window_s > 0 else 0.0 for t in names},
    }


def latency_at(results: Sequence[Result], quantile: float) -> float:
    """End-to-end latency at ``quantile`` (0..1) of ``results``; 0 when there are none."""
    import numpy as np

    if not results:
        return 0.0
    return float(np.percentile(np.asarray([r.latency_ms for r in results], dtype=float), quantile * 100))


def partition_lag(end: int, committed: int | None, beginning: int = 0) -> int:
    """Records of one partition its group has not committed (never negative: see the end-offset caveat)."""
    return max(0, end - (beginning if committed is None else committed))


def lag_totals(
    pools: Mapping[str, Sequence[tuple[str, int]]],
    ends: Mapping[tuple[str, int], int],
    committed: Mapping[str, Mapping[tuple[str, int], int | None]],
    beginnings: Mapping[tuple[str, int], int] | None = None,
) -> dict[str, int]:
    """Lag per pool: the sum of :func:`partition_lag` over the (topic, partition) pairs of its topics."""
    starts = beginnings or {}
    return {
        pool: sum(partition_lag(ends[tp], committed[pool].get(tp), starts.get(tp, 0)) for tp in tps)
        for pool, tps in pools.items()
    }


def uncommitted(
    pools: Mapping[str, Sequence[tuple[str, int]]],
    committed: Mapping[str, Mapping[tuple[str, int], int | None]],
    ends: Mapping[tuple[str, int], int],
    beginnings: Mapping[tuple[str, int], int] | None = None,
) -> list[str]:
    """Pools whose group has committed nothing on a partition that holds records."""
    starts = beginnings or {}
    return [
        pool
        for pool, tps in pools.items()
        if any(committed[pool].get(tp) is None and ends[tp] > starts.get(tp, 0) for tp in tps)
    ]


@dataclass
class ControlState:
    """What the control topic says, newest first."""

    report: ControllerReport | None = None
    policy: PolicyUpdate | None = None
    replies: list[tuple[int, ControlReply]] = field(default_factory=list)
    """(offset, reply), newest first, at most :data:`REPLIES_SHOWN`."""
    undecodable: int = 0

    def complete(self) -> bool:
        """Whether reading further back could change nothing shown."""
        return self.report is not None and self.policy is not None and len(self.replies) >= REPLIES_SHOWN


def control_state(records: Iterable[tuple[int, bytes | None]], state: ControlState | None = None) -> ControlState:
    """Fold (offset, value) records of the control topic into ``state``; records may come in any order,
    but every record passed later must be older than those in ``state`` (the backward walk)."""
    state = state or ControlState()
    for offset, value in sorted(records, key=lambda item: -item[0]):
        try:
            message = decode_control(value or b"")
        except DecodeError:
            state.undecodable += 1
            continue
        if isinstance(message, ControllerReport) and state.report is None:
            state.report = message
        elif isinstance(message, PolicyUpdate) and state.policy is None:
            state.policy = message
        elif isinstance(message, ControlReply) and len(state.replies) < REPLIES_SHOWN:
            state.replies.append((offset, message))
    return state


def _error_pct(observed: float, target: float) -> float:
    return round((observed - target) / target * 100.0, 2)


def cost_vs_target(targets: Targets, window: Sequence[Result], stats: Mapping[str, Any]) -> dict[str, Any]:
    """Each target the controller holds next to this window's observed value."""
    out: dict[str, Any] = {}
    observed = {
        "cost_per_request": stats["cost_per_request"],
        "cost_per_second": stats["cost_per_second"],
        "latency_ms": latency_at(window, targets.latency_quantile),
        "quality_floor": stats["mean_confidence"],
    }
    for name, value in observed.items():
        target = getattr(targets, name)
        if target is not None:
            entry = {"target": target, "observed": value, "error_pct": _error_pct(value, target) if target else None}
            if name == "latency_ms":
                entry["quantile"] = targets.latency_quantile
            out[name] = entry
    return out


def _policy_json(policy: PolicyUpdate) -> dict[str, Any]:
    return {
        "version": policy.version,
        "thresholds": dict(policy.thresholds),
        "allowed_tiers": list(policy.allowed_tiers),
        "reason": policy.reason,
        "issued_at": policy.issued_at,
        "lam": policy.lam,
        "mu": policy.mu,
        "pinned": policy.pinned,
    }


def _targets_json(targets: Targets) -> dict[str, Any]:
    return {
        "cost_per_request": targets.cost_per_request,
        "cost_per_second": targets.cost_per_second,
        "latency_ms": targets.latency_ms,
        "latency_quantile": targets.latency_quantile,
        "quality_floor": targets.quality_floor,
    }


def controller_json(state: ControlState, now: float) -> dict[str, Any] | None:
    """The ``controller`` object of the JSON; ``None`` when no report exists."""
    report = state.report
    if report is None:
        return None
    observed = report.observed
    return {
        "targets": _targets_json(report.targets),
        "observed": {
            "requests": observed.requests,
            "window_s": observed.window_s,
            "rate": observed.rate,
            "cost_per_request": observed.cost_per_request,
            "cost_per_second": observed.cost_per_second,
            "latency_ms": observed.latency_ms,
            "escalation_rate": observed.escalation_rate,
            "mean_confidence": observed.mean_confidence,
            "tier_share": dict(observed.tier_share),
            "tier_latency_ms": dict(observed.tier_latency_ms),
        },
        "version": report.version,
        "lam": report.lam,
        "mu": report.mu,
        "paused": list(report.paused),
        "pinned": report.pinned,
        "rejected": dict(report.rejected),
        "at": report.at,
        "age_s": round(max(0.0, now - report.at), 3),
        "thresholds": dict(state.policy.thresholds) if state.policy else None,
        "base": dict(report.base),
    }


@dataclass
class Snapshot:
    """Everything one status read found (plain data: the renderers and the JSON need nothing else)."""

    namespace: str
    bootstrap: str
    tiers: tuple[str, ...]
    at: float
    window_s: float
    results: list[Result]
    """Results read from the tail of the results topic (may reach further back than the window)."""
    lag: dict[str, int]
    uncommitted: list[str] = field(default_factory=list)
    control: ControlState = field(default_factory=ControlState)
    undecodable_results: int = 0
    truncated: bool = False


def status_json(snapshot: Snapshot) -> dict[str, Any]:
    """The documented ``--json`` object (see the module docstring)."""
    window = in_window(snapshot.results, snapshot.at, snapshot.window_s)
    stats = window_stats(window, snapshot.window_s, snapshot.tiers)
    report = snapshot.control.report
    policy = snapshot.control.policy
    return {
        "namespace": snapshot.namespace,
        "bootstrap": snapshot.bootstrap,
        "at": snapshot.at,
        "window_s": snapshot.window_s,
        "results": stats,
        "lag": dict(snapshot.lag),
        "uncommitted_pools": list(snapshot.uncommitted),
        "controller": controller_json(snapshot.control, snapshot.at),
        "policy": _policy_json(policy) if policy else None,
        "replies": [
            {
                "offset": reply.offset,
                "accepted": reply.accepted,
                "reason": reply.reason,
                "key_id": reply.key_id,
                "seq": reply.seq,
                "at": reply.at,
            }
            for _, reply in snapshot.control.replies
        ],
        "cost_vs_target": cost_vs_target(report.targets, window, stats) if report else {},
        "undecodable": {"results": snapshot.undecodable_results, "control": snapshot.control.undecodable},
        "truncated": snapshot.truncated,
    }


# --------------------------------------------------------------------------- rendering


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(snapshot: Snapshot, error: str = "") -> Any:
    """Rich tables of a snapshot (``error``: why the newest refresh failed, shown on top)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    doc = status_json(snapshot)
    res = doc["results"]
    parts: list[Any] = []
    if error:
        parts.append(Text(f"refresh failed: {error}", style="bold red"))
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.at))
    parts.append(
        Text(f"tierflow status · namespace {snapshot.namespace} · {snapshot.bootstrap} · {stamp}", style="bold")
    )

    summary = Table(title=f"results, last {snapshot.window_s:g} s", title_justify="left", show_header=True)
    for column in ("results/s", "count", "status", "p50 ms", "p95 ms", "p99 ms", "cost/req", "cost/s", "escalated"):
        summary.add_column(column, justify="right")
    statuses = " ".join(f"{k} {v}" for k, v in res["by_status"].items()) or "-"
    latency = res["latency_ms"]
    summary.add_row(
        f"{res['rate']:.1f}",
        str(res["count"]),
        statuses,
        f"{latency['p50']:.0f}",
        f"{latency['p95']:.0f}",
        f"{latency['p99']:.0f}",
        _num(res["cost_per_request"]),
        _num(res["cost_per_second"]),
        _pct(res["escalation_rate"]),
    )
    parts.append(summary)

    thresholds = doc["policy"]["thresholds"] if doc["policy"] else {}
    paused = set(doc["controller"]["paused"]) if doc["controller"] else set()
    pools = Table(title="pools", title_justify="left")
    for column, justify in (("pool", "left"), ("answered", "right"), ("answers/s", "right"), ("lag", "right")):
        pools.add_column(column, justify=justify)  # type: ignore[arg-type]
    pools.add_column("threshold", justify="right")
    pools.add_column("state")
    for pool, lag in doc["lag"].items():
        tier = pool.removeprefix("worker.") if pool.startswith("worker.") else ""
        state = "paused" if tier and tier in paused else ""
        if pool in doc["uncommitted_pools"]:
            state = f"{state}, no commits" if state else "no commits"
        pools.add_row(
            pool,
            _pct(res["tier_share"].get(tier)) if tier else "",
            f"{res['tier_answers_per_s'].get(tier, 0.0):.1f}" if tier else "",
            str(lag),
            _num(thresholds.get(tier)) if tier in thresholds else "",
            state,
        )
    parts.append(pools)

    controller = doc["controller"]
    if controller is None:
        parts.append(Text("controller: no report yet"))
    else:
        targets = Table(
            title=f"controller · policy v{controller['version']} · λ {controller['lam']:.3g} · μ {controller['mu']:.3g}"
            f" · report {controller['age_s']:.1f} s old" + (" · pinned" if controller["pinned"] else ""),
            title_justify="left",
        )
        for column in ("target", "goal", "observed (this window)", "error", "controller saw"):
            targets.add_column(column, justify="left" if column == "target" else "right")
        seen = controller["observed"]
        for name, entry in doc["cost_vs_target"].items():
            label = f"latency p{entry['quantile'] * 100:g} ms" if name == "latency_ms" else name.replace("_", " ")
            error_pct = entry["error_pct"]
            style = "green" if error_pct is not None and (error_pct <= 0) == (name != "quality_floor") else "yellow"
            targets.add_row(
                label,
                _num(entry["target"]),
                _num(entry["observed"]),
                Text("-" if error_pct is None else f"{error_pct:+.1f}%", style=style),
                _num(seen["mean_confidence" if name == "quality_floor" else name]),
            )
        if not doc["cost_vs_target"]:
            targets.add_row("no targets set", "", "", "", "")
        parts.append(targets)
        extra = []
        if controller["paused"]:
            extra.append("paused tiers: " + ", ".join(controller["paused"]))
        if controller["rejected"]:
            extra.append("rejected commands: " + ", ".join(f"{k} {v}" for k, v in controller["rejected"].items()))
        if extra:
            parts.append(Text(" · ".join(extra)))
    policy = doc["policy"]
    if policy is not None:
        shown = ", ".join(f"{t} {v:.3g}" for t, v in policy["thresholds"].items())
        parts.append(
            Text(
                f"policy v{policy['version']} ({policy['reason']}): thresholds {shown or '-'}; "
                f"allowed {', '.join(policy['allowed_tiers']) or '-'}"
            )
        )
    for reply in doc["replies"]:
        verdict = "accepted" if reply["accepted"] else "rejected"
        who = f" {reply['key_id']}#{reply['seq']}" if reply["key_id"] else ""
        parts.append(Text(f"reply to offset {reply['offset']}{who}: {verdict} ({reply['reason']})", style="dim"))
    skipped = doc["undecodable"]
    if skipped["results"] or skipped["control"]:
        parts.append(Text(f"undecodable records skipped: results {skipped['results']}, control {skipped['control']}"))
    if doc["truncated"]:
        parts.append(Text(f"(window truncated at {MAX_RECORDS_PER_PARTITION} records per partition)", style="dim"))
    return Group(*parts)


# --------------------------------------------------------------------------- Kafka


def stage_pools(config: Config) -> dict[str, list[str]]:
    """Each stage pool of the deployment and the topics its consumer group reads."""
    layout = config.layout
    pools = {"router": [layout.requests], "verifier": [layout.answers]}
    for tier in layout.tiers:
        pools[f"worker.{tier}"] = [layout.tier(tier), layout.escalate(tier)]
    if config.results_path:
        pools["sink"] = [layout.results]
    return pools


Record = tuple[int, bytes | None]


class StatusReader:
    """Kafka clients for repeated snapshots: one assigning consumer for data, one per group for its offsets."""

    def __init__(self, kafka: Mapping[str, Any], config: Config, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.kafka = dict(kafka)
        self.config = config
        self.timeout_s = timeout_s
        self.pools = stage_pools(config)
        self._data: Any = None
        self._groups: dict[str, Any] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        options = {**self.kafka, "enable_auto_commit": False, "fetch_max_wait_ms": 50}
        try:
            self._data = AIOKafkaConsumer(**options, group_id=None)
            await asyncio.wait_for(self._data.start(), self.timeout_s)
            for pool in self.pools:
                consumer = AIOKafkaConsumer(**options, group_id=f"{self.config.namespace}.{pool}")
                self._groups[pool] = consumer
                await asyncio.wait_for(consumer.start(), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.stop()
            raise BrokerError(f"cannot reach the broker at {self.kafka.get('bootstrap_servers')}: {exc}") from exc

    async def stop(self) -> None:
        consumers = [c for c in (self._data, *self._groups.values()) if c is not None]
        self._data, self._groups = None, {}
        for consumer in consumers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), self.timeout_s)

    async def collect(self, window_s: float, now: float | None = None) -> Snapshot:
        """One snapshot; ``now`` (epoch seconds) defaults to the clock when reading starts."""
        from aiokafka.errors import KafkaError

        now = time.time() if now is None else now
        try:
            return await asyncio.wait_for(self._collect(window_s, now), self.timeout_s)
        except TimeoutError as exc:
            raise BrokerError(
                f"no status from {self.kafka.get('bootstrap_servers')} within {self.timeout_s:g}s"
            ) from exc
        except KafkaError as exc:
            raise BrokerError(f"reading status failed: {exc}") from exc

    async def _partitions(self, topics: Iterable[str]) -> dict[str, list[tuple[str, int]]]:
        """The partitions each topic has on the broker (the operator's counts, not necessarily the config's)."""
        # What consumer.topics() does, keeping the partitions it learns (the consumer's own metadata
        # only tracks topics it subscribed to or was assigned).
        cluster = await self._data._client.fetch_all_metadata()
        known = cluster.topics()
        if self.config.layout.results not in known:
            raise ConfigError(
                f"namespace {self.config.namespace!r} has no topics on {self.kafka.get('bootstrap_servers')} "
                "(is the pipeline up? tierflow up prints its namespace and broker)"
            )
        return {topic: [(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())] for topic in topics}

    async def _collect(self, window_s: float, now: float) -> Snapshot:
        from aiokafka import TopicPartition

        layout = self.config.layout
        pool_topics = {t for topics in self.pools.values() for t in topics}
        partitions = await self._partitions(sorted(pool_topics | {layout.results, layout.control}))
        every = [TopicPartition(*tp) for tps in partitions.values() for tp in tps]
        ends = {(tp.topic, tp.partition): int(o) for tp, o in (await self._data.end_offsets(every)).items()}
        starts = {(tp.topic, tp.partition): int(o) for tp, o in (await self._data.beginning_offsets(every)).items()}

        pools = {pool: [tp for t in topics for tp in partitions[t]] for pool, topics in self.pools.items()}
        committed: dict[str, dict[tuple[str, int], int | None]] = {}
        for pool, tps in pools.items():
            consumer = self._groups[pool]
            assigned = [TopicPartition(*tp) for tp in tps]
            consumer.assign(assigned)
            consumer.pause(*assigned)  # never fetch: this consumer only asks for committed offsets
            committed[pool] = {tp: await consumer.committed(TopicPartition(*tp)) for tp in tps}

        results, bad, truncated = await self._read_results(partitions[layout.results], ends, starts, now - window_s)
        control = await self._read_control(partitions[layout.control], ends, starts)
        return Snapshot(
            namespace=self.config.namespace,
            bootstrap=str(self.kafka.get("bootstrap_servers", "")),
            tiers=layout.tiers,
            at=now,
            window_s=window_s,
            results=results,
            lag=lag_totals(pools, ends, committed, starts),
            uncommitted=uncommitted(pools, committed, ends, starts),
            control=control,
            undecodable_results=bad,
            truncated=truncated,
        )

    async def _read_results(
        self,
        tps: list[tuple[str, int]],
        ends: Mapping[tuple[str, int], int],
        starts: Mapping[tuple[str, int], int],
        cutoff: float,
    ) -> tuple[list[Result], int, bool]:
        """Walk each results partition backwards in chunks until a chunk starts before ``cutoff``."""
        results: list[Result] = []
        bad = 0
        truncated = False
        low = {tp: ends[tp] for tp in tps}
        pending = [tp for tp in tps if ends[tp] > starts[tp]]
        first = True
        while pending:
            ranges = {tp: (max(starts[tp], low[tp] - CHUNK), None if first else low[tp]) for tp in pending}
            chunks = await self._read_ranges(ranges, ends)
            first = False
            still = []
            for tp in pending:
                oldest = float("inf")
                for _, value in chunks[tp]:
                    try:
                        result = Result.from_wire(value or b"")
                    except DecodeError:
                        bad += 1
                        continue
                    results.append(result)
                    oldest = min(oldest, result.completed_at)
                low[tp] = ranges[tp][0]
                if low[tp] <= starts[tp] or oldest < cutoff:
                    continue
                if ends[tp] - low[tp] >= MAX_RECORDS_PER_PARTITION:
                    truncated = True
                    continue
                still.append(tp)
            pending = still
        return results, bad, truncated

    async def _read_control(
        self, tps: list[tuple[str, int]], ends: Mapping[tuple[str, int], int], starts: Mapping[tuple[str, int], int]
    ) -> ControlState:
        state = ControlState()
        for tp in tps:  # one partition
            low, first = ends[tp], True
            while low > starts[tp] and not state.complete() and ends[tp] - low < CONTROL_SCAN_LIMIT:
                start = max(starts[tp], low - CHUNK)
                chunk = await self._read_ranges({tp: (start, None if first else low)}, ends)
                control_state(chunk[tp], state)
                low, first = start, False
        return state

    async def _read_ranges(
        self, ranges: Mapping[tuple[str, int], tuple[int, int | None]], ends: Mapping[tuple[str, int], int]
    ) -> dict[tuple[str, int], list[Record]]:
        """Records of each partition from ``start`` to ``stop`` (``None``: to the end the broker reported,
        keeping whatever else its last batch holds)."""
        from aiokafka import TopicPartition

        consumer = self._data
        tps = {TopicPartition(*tp): tp for tp in ranges}
        consumer.assign(list(tps))
        for tp, key in tps.items():
            consumer.seek(tp, ranges[key][0])
        out: dict[tuple[str, int], list[Record]] = {key: [] for key in ranges}

        def done(key: tuple[str, int], position: int) -> bool:
            stop = ranges[key][1]
            return position >= (ends[key] if stop is None else stop)

        behind = {tp for tp, key in tps.items() if not done(key, ranges[key][0])}
        while behind:
            for tp, records in (await consumer.getmany(*behind, timeout_ms=200)).items():
                key = tps[tp]
                stop = ranges[key][1]
                out[key] += [(r.offset, r.value) for r in records if stop is None or r.offset < stop]
            behind = {tp for tp in behind if not done(tps[tp], await consumer.position(tp))}
        consumer.pause(*tps)  # no background fetching between reads
        return out


async def collect_status(
    kafka: Mapping[str, Any], config: Config, window_s: float = DEFAULT_WINDOW_S, now: float | None = None
) -> Snapshot:
    """One snapshot with clients opened and closed around it."""
    reader = StatusReader(kafka, config)
    await reader.start()
    try:
        return await reader.collect(window_s, now)
    finally:
        await reader.stop()


# --------------------------------------------------------------------------- CLI


def add_status_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``tierflow status`` to the CLI's subcommands (call :func:`run_status` with its arguments)."""
    status = sub.add_parser(
        "status",
        help="a live view of throughput, latency, cost against target, lag and the controller",
        description="Read the results, control and stage topics of a running pipeline (Kafka only: no Ray, "
        "no consumer group joined) and show results per second, latency percentiles, cost against the "
        "controller's targets, per-tier share, load and lag, and the controller's state. Refreshes until "
        "Ctrl-C; --once --json prints one JSON object for scripts.",
    )
    source = status.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="TOML config of the pipeline")
    source.add_argument("--portfolio", metavar="NAME", help="built-in portfolio (or a config file path)")
    status.add_argument("--bootstrap", default="", help="bootstrap servers (default: the config's)")
    status.add_argument("--namespace", default="", help="namespace to watch (default: the config's)")
    status.add_argument(
        "--window", type=float, default=DEFAULT_WINDOW_S, metavar="S", help="seconds of results to summarise"
    )
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")
    status.add_argument("--json", action="store_true", help="with --once: print one JSON object")
    status.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, metavar="S", help="refresh every S seconds (default 2)"
    )


def _resolve(args: argparse.Namespace) -> tuple[Config, str]:
    from infra.config import load_config
    from infra.trace import load_any

    if args.window <= 0:
        raise ConfigError("--window must be > 0")
    if args.interval <= 0:
        raise ConfigError("--interval must be > 0")
    if args.json and not args.once:
        raise ConfigError("--json needs --once")
    config = load_config(args.config) if args.config else load_any(args.portfolio)
    if args.namespace:
        config = replace(config, namespace=args.namespace)
        _ = config.layout  # validates the name
    bootstrap = args.bootstrap or config.broker.bootstrap_servers
    if not bootstrap:
        raise ConfigError("no bootstrap servers: pass --bootstrap (as printed by tierflow up)")
    return config, bootstrap


def run_status(args: argparse.Namespace) -> int:
    """``tierflow status``: 0 on success and on Ctrl-C; errors raise :class:`~topics.errors.TierflowError`."""
    from infra.broker import kafka_options

    config, bootstrap = _resolve(args)
    kafka = kafka_options(config.broker, bootstrap)
    if args.once:
        snapshot = asyncio.run(collect_status(kafka, config, args.window))
        if args.json:
            sys.stdout.write(json.dumps(status_json(snapshot), indent=2) + "\n")
        else:
            from rich.console import Console

            Console().print(render(snapshot))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_live(kafka, config, args.window, args.interval))
    return 0


async def _live(kafka: Mapping[str, Any], config: Config, window_s: float, interval_s: float) -> None:
    """Refresh a rich Live view every ``interval_s`` until Ctrl-C or SIGTERM; a failed refresh is shown and retried."""
    from rich.live import Live
    from rich.text import Text

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    reader = StatusReader(kafka, config)
    await reader.start()
    last: Snapshot | None = None
    try:
        with Live(Text("tierflow status: reading…"), auto_refresh=False, transient=False) as live:
            while not stop.is_set():
                collect = asyncio.ensure_future(reader.collect(window_s))
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait({collect, halt}, return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                if not collect.done():
                    collect.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await collect
                    break
                try:
                    last = collect.result()
                    live.update(render(last), refresh=True)
                except (BrokerError, ConfigError) as exc:
                    view = render(last, str(exc)) if last else Text(f"refresh failed: {exc}", style="bold red")
                    live.update(view, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval_s)
    finally:
        await reader.stop()
