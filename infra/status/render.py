"""What ``tierflow status`` shows: the ``--json`` object and the rich tables drawn from it.

The tables are drawn from the JSON object, so the two never disagree.

``--once --json`` prints one JSON object:

``namespace``, ``bootstrap``, ``at`` (epoch seconds of the snapshot), ``window_s``;
``results``: ``count`` (results completed in the window), ``rate`` (count / window_s),
``by_status`` {status: count}, ``latency_ms`` {``p50``, ``p95``, ``p99``} (end to end),
``cost_per_request`` (mean total cost), ``cost_per_second`` (total cost / window_s),
``escalation_rate`` (share with more than one tier on their path), ``mean_confidence``,
``answered_share`` {tier: share of the window's results it answered; every configured tier;
rejected results have no tier, so the shares may sum below 1}, ``tier_answers_per_s``
{tier: answers it computed per second, from the results' paths};
``lag`` {pool: records not yet committed}; ``uncommitted_pools`` [pools whose group has
committed nothing on a partition that holds records: their lag counts from its beginning];
``controller``: null when no ControllerReport was found, else ``targets``
{cost_per_request, cost_per_second, latency_ms, latency_quantile, quality_floor},
``observed`` (the report's own window: requests, window_s, rate, cost_per_request,
cost_per_second, latency_ms, escalation_rate, mean_confidence, visited_share {tier: share
of the requests whose path went through it; an escalated one counts at every tier},
tier_latency_ms, explore_share, explore_cost_per_request (the exploration copies' cost spread
over the window's requests, included in cost_per_request), explored_requests), ``drift`` [one
sentence per drifting tier, with its window], ``version``, ``lam``, ``mu``, ``paused``, ``pinned``, ``rejected``
{reason: count}, ``ignored`` {kind:reason: control records the controller ignored since it
started, e.g. ``update:unsigned``, ``reply:bad_signature``: forgeries}, ``at``, ``age_s``,
``thresholds`` (of the newest PolicyUpdate, or null), ``base`` (the base thresholds the
controller steers from);
``policy``: the newest PolicyUpdate {version, thresholds, allowed_tiers, reason,
issued_at, lam, mu, pinned, rollout (a pushed policy: {name, digest, mode, share}, or null)} or null;
``replies``: the newest ControlReplies, newest first [{offset (of the command answered),
accepted, reason, key_id, seq, at}];
``pools``: null when no supervisor published a PoolReport, else ``at``, ``age_s``, ``changed``
[pools its newest decision resized] and ``pools`` {pool: {``desired``, ``running`` (started, not
finished), ``ready`` (answering and holding a partition), ``low``, ``high`` (the replicas it may
run), ``autoscaled``, ``lag``, ``arrival_rate`` (records/s into its topics), ``service_rate``
(records one replica serves per second of work; 0: not measured), ``reason`` (of its count),
``changed_at``}};
``cost_vs_target`` {cost_per_request | cost_per_second | latency_ms | quality_floor:
{``target``, ``observed`` (this window's; latency at the target's ``quantile``, a key of
its own there), ``error_pct`` (observed vs target, + means above)}} for each target the controller holds;
``undecodable`` {``results``, ``control``: records skipped as undecodable; ``unsigned``: reports,
updates and replies left out of everything above because no key in ``[control] public_keys``
signed them — unsigned, an unknown key id or a bad signature}; ``truncated``: true when
some partition had more records in the window than one read takes
(:data:`infra.status.reader.MAX_RECORDS_PER_PARTITION`).

The two shares are :func:`policies.window.answered_share` (the tier whose answer was
delivered) and :func:`policies.window.visited_share` (every tier a request ran at).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from infra.status.stats import ControlState, Snapshot, cost_vs_target, window_stats
from policies.window import in_window
from topics.control import PolicyUpdate, PoolReport, Targets
from topics.rollout import Rollout


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
        "rollout": rollout_json(policy.rollout),
    }


def rollout_json(rollout: Rollout | None) -> dict[str, Any] | None:
    """A pushed policy as status shows it: its name, digest, mode and share (not the file's text)."""
    if rollout is None:
        return None
    return {"name": rollout.name, "digest": rollout.digest, "mode": str(rollout.mode), "share": rollout.share}


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
            "visited_share": dict(observed.visited_share),
            "tier_latency_ms": dict(observed.tier_latency_ms),
            "explore_share": observed.explore_share,
            "explore_cost_per_request": observed.explore_cost_per_request,
            "explored_requests": observed.explored_requests,
        },
        "drift": list(report.drift),
        "version": report.version,
        "lam": report.lam,
        "mu": report.mu,
        "paused": list(report.paused),
        "pinned": report.pinned,
        "rejected": dict(report.rejected),
        "ignored": dict(report.ignored),
        "at": report.at,
        "age_s": round(max(0.0, now - report.at), 3),
        "thresholds": dict(state.policy.thresholds) if state.policy else None,
        "base": dict(report.base),
    }


def pools_json(report: PoolReport | None, now: float) -> dict[str, Any] | None:
    """The ``pools`` object of the JSON; ``None`` when no supervisor reported."""
    if report is None:
        return None
    return {
        "at": report.at,
        "age_s": round(max(0.0, now - report.at), 3),
        "changed": list(report.changed),
        "pools": {p.pool: {k: v for k, v in msgspec.structs.asdict(p).items() if k != "pool"} for p in report.pools},
    }


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
        "pools": pools_json(snapshot.control.pools, snapshot.at),
        "cost_vs_target": cost_vs_target(report.targets, window, stats) if report else {},
        "undecodable": {
            "results": snapshot.undecodable_results,
            "control": snapshot.control.undecodable,
            "unsigned": sum(snapshot.control.unsigned.values()),
        },
        "truncated": snapshot.truncated,
    }


def _pushed(rollout: dict[str, Any] | None) -> str:
    if rollout is None:
        return ""
    reach = f"canary {rollout['share']:.0%}" if rollout["mode"] == "canary" else rollout["mode"]
    return f"; pushed {rollout['name']} {rollout['digest']} ({reach})"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pools_table(doc: dict[str, Any]) -> Any:
    """One row per stage pool: what it answered, its lag, and (from the supervisor) its replicas."""
    from rich.table import Table

    res = doc["results"]
    thresholds = doc["policy"]["thresholds"] if doc["policy"] else {}
    paused = set(doc["controller"]["paused"]) if doc["controller"] else set()
    sized = doc["pools"]["pools"] if doc["pools"] else {}
    title = "pools" + (f" · replicas as of {doc['pools']['age_s']:.0f} s ago" if doc["pools"] else "")
    pools = Table(title=title, title_justify="left")
    pools.add_column("pool", no_wrap=True)  # the names are what a reader looks for: never cut
    columns = ["answered", "answers/s", "lag", "threshold"] + (["replicas", "ready", "range"] if sized else [])
    for column in columns:
        pools.add_column(column, justify="right")
    pools.add_column("state")
    for pool, lag in doc["lag"].items():
        tier = pool.removeprefix("worker.") if pool.startswith("worker.") else ""
        notes = ["paused"] if tier and tier in paused else []
        if pool in doc["uncommitted_pools"]:
            notes.append("no commits")
        size = sized.get(pool)
        if size is not None:
            if size["desired"] == 0:
                notes.append("asleep")
            elif size["ready"] < size["desired"]:
                notes.append(f"{size['desired'] - size['ready']} not ready")
            if size["reason"] != "configured":
                notes.append(size["reason"])
        cells = [
            _pct(res["answered_share"].get(tier)) if tier else "",
            f"{res['tier_answers_per_s'].get(tier, 0.0):.1f}" if tier else "",
            str(lag),
            _num(thresholds.get(tier)) if tier in thresholds else "",
        ]
        if sized:
            cells += [
                f"{size['running']}/{size['desired']}" if size else "",
                str(size["ready"]) if size else "",
                (f"{size['low']}-{size['high']}" + (" auto" if size["autoscaled"] else "")) if size else "",
            ]
        pools.add_row(pool, *cells, "; ".join(notes))
    return pools


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

    parts.append(_pools_table(doc))

    controller = doc["controller"]
    skipped_unsigned = doc["undecodable"]["unsigned"]
    if controller is None:
        parts.append(Text("controller: no signed report yet" if skipped_unsigned else "controller: no report yet"))
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
        if controller["ignored"]:
            ignored = ", ".join(f"{k} {v}" for k, v in controller["ignored"].items())
            extra.append(f"ignored by the controller: {ignored}")
        if seen["explore_share"] or seen["explored_requests"]:
            extra.append(
                f"exploring {seen['explore_share']:.1%} of requests: {seen['explored_requests']} this window, "
                f"copies {_num(seen['explore_cost_per_request'])}/request"
            )
        if extra:
            parts.append(Text(" · ".join(extra)))
        parts.extend(Text(f"drift: {alarm}", style="bold yellow") for alarm in controller["drift"])
    policy = doc["policy"]
    if policy is not None:
        shown = ", ".join(f"{t} {v:.3g}" for t, v in policy["thresholds"].items())
        parts.append(
            Text(
                f"policy v{policy['version']} ({policy['reason']}): thresholds {shown or '-'}; "
                f"allowed {', '.join(policy['allowed_tiers']) or '-'}{_pushed(policy['rollout'])}"
            )
        )
    for reply in doc["replies"]:
        verdict = "accepted" if reply["accepted"] else "rejected"
        who = f" {reply['key_id']}#{reply['seq']}" if reply["key_id"] else ""
        parts.append(Text(f"reply to offset {reply['offset']}{who}: {verdict} ({reply['reason']})", style="dim"))
    skipped = doc["undecodable"]
    if skipped["results"] or skipped["control"]:
        parts.append(Text(f"undecodable records skipped: results {skipped['results']}, control {skipped['control']}"))
    if skipped_unsigned:
        kinds = ", ".join(f"{why} {n}" for why, n in sorted(snapshot.control.unsigned.items()))
        parts.append(
            Text(
                f"control records not signed by a key in [control] public_keys, left out: {kinds}",
                style="yellow",
            )
        )
    if doc["truncated"]:
        parts.append(Text(f"(window truncated at {snapshot.truncated_at} records per partition)", style="dim"))
    return Group(*parts)
