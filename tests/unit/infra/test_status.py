"""The pure half of `tierflow status`: window statistics, lag arithmetic, control state, JSON and tables."""

from __future__ import annotations

import argparse
import io
import json

import pytest
from rich.console import Console

from infra.status.command import add_status_parser, run_status
from infra.status.render import controller_json, render, status_json
from infra.status.stats import (
    REPLIES_SHOWN,
    ControlState,
    Snapshot,
    control_state,
    cost_vs_target,
    lag_totals,
    partition_lag,
    uncommitted,
    window_stats,
)
from policies.window import in_window, latency_at
from topics.control import (
    CommandAction,
    ControlCommand,
    ControllerKey,
    ControllerRecord,
    ControllerReport,
    ControlReply,
    Observed,
    PolicyUpdate,
    PoolReport,
    PoolStatus,
    Targets,
    TrustedKeys,
)
from topics.errors import ConfigError
from topics.messages import Result, Status

NOW = 1_000_000.0
SIGNER = ControllerKey.generate("ctl")
TRUST = TrustedKeys("ns", {"ctl": SIGNER.public_key})


def _signed(record: ControllerRecord) -> bytes:
    """What the controller of namespace ``ns`` writes."""
    return SIGNER.sign(record, "ns").to_wire()


def _result(
    n: int,
    age_s: float = 1.0,
    *,
    latency: float = 100.0,
    cost: float = 0.0,
    path: tuple[str, ...] = ("a",),
    status: Status = Status.OK,
    confidence: float = 0.5,
) -> Result:
    return Result(
        request_id=f"r{n}",
        status=status,
        tier=path[-1] if path else "",
        confidence=confidence,
        total_cost=cost,
        latency_ms=latency,
        path=path,
        completed_at=NOW - age_s,
    )


def test_window_keeps_what_completed_within_it_and_later() -> None:
    results = [_result(1, 0.5), _result(2, 10.0), _result(3, 10.5), _result(4, -2.0)]
    assert [r.request_id for r in in_window(results, NOW, 10.0)] == ["r1", "r2", "r4"]


def test_window_stats_numbers() -> None:
    results = [
        _result(1, latency=100, cost=0.01, path=("a",)),
        _result(2, latency=200, cost=0.02, path=("a", "b"), confidence=0.9),
        _result(3, latency=300, cost=0.03, path=("a",), status=Status.EXHAUSTED),
        _result(4, latency=400, cost=0.04, path=("a", "b", "c"), confidence=0.1),
        _result(5, latency=500, cost=0.0, path=(), status=Status.REJECTED),
    ]
    stats = window_stats(results, 10.0, ("a", "b", "c", "d"))
    assert stats["count"] == 5
    assert stats["rate"] == pytest.approx(0.5)
    assert stats["by_status"] == {"exhausted": 1, "ok": 3, "rejected": 1}
    assert stats["latency_ms"] == {"p50": 300.0, "p95": 480.0, "p99": 496.0}
    assert stats["cost_per_request"] == pytest.approx(0.02)
    assert stats["cost_per_second"] == pytest.approx(0.01)
    assert stats["escalation_rate"] == pytest.approx(0.4)
    assert stats["mean_confidence"] == pytest.approx((0.5 * 3 + 0.9 + 0.1) / 5)
    # the rejected result was answered by no tier, so the shares sum to 0.8
    assert stats["answered_share"] == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.2, "d": 0.0})
    assert stats["tier_answers_per_s"] == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.1, "d": 0.0})


def test_window_stats_empty_and_unknown_tiers() -> None:
    stats = window_stats([], 10.0, ("a",))
    assert stats["count"] == 0 and stats["rate"] == 0.0 and stats["by_status"] == {}
    assert stats["latency_ms"] == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    assert stats["cost_per_request"] == 0.0 and stats["escalation_rate"] == 0.0
    assert stats["answered_share"] == {"a": 0.0}
    # a tier the config does not know still shows, after the configured ones
    assert list(window_stats([_result(1, path=("x",))], 10.0, ("a",))["answered_share"]) == ["a", "x"]


def test_latency_at_a_quantile() -> None:
    results = [_result(i, latency=float(v)) for i, v in enumerate((100, 200, 300, 400))]
    assert latency_at(results, 0.5) == 250.0
    assert latency_at(results, 0.95) == pytest.approx(385.0)
    assert latency_at([], 0.95) == 0.0


def test_partition_lag() -> None:
    assert partition_lag(10, 4) == 6
    assert partition_lag(10, None) == 10
    assert partition_lag(10, None, beginning=7) == 3
    assert partition_lag(5, 6) == 0  # an end offset below the committed one (Tansu's batch-base end)


def test_lag_totals_and_uncommitted_pools() -> None:
    pools = {"router": [("q", 0), ("q", 1)], "worker.a": [("t", 0), ("e", 0)], "verifier": [("ans", 0)]}
    ends = {("q", 0): 5, ("q", 1): 3, ("t", 0): 4, ("e", 0): 3, ("ans", 0): 0}
    committed: dict[str, dict[tuple[str, int], int | None]] = {
        "router": {("q", 0): 2, ("q", 1): None},
        "worker.a": {("t", 0): 4},
        "verifier": {},
    }
    assert lag_totals(pools, ends, committed) == {"router": 6, "worker.a": 3, "verifier": 0}
    assert lag_totals(pools, ends, committed, {("e", 0): 1}) == {"router": 6, "worker.a": 2, "verifier": 0}
    # an empty partition without commits is no news
    assert uncommitted(pools, committed, ends) == ["router", "worker.a"]
    assert uncommitted(pools, committed, ends, {("q", 1): 3, ("e", 0): 3}) == []


def _report(version: int, at: float = NOW - 2, **kwargs: object) -> ControllerReport:
    return ControllerReport(
        targets=Targets(cost_per_request=0.02),
        observed=Observed(requests=3, cost_per_request=0.03),
        version=version,
        lam=0.5,
        mu=0.1,
        at=at,
        **kwargs,  # type: ignore[arg-type]
    )


def _policy(version: int) -> PolicyUpdate:
    return PolicyUpdate(
        version=version, thresholds={"a": 0.1 * version}, allowed_tiers=("a",), reason=f"v{version}", issued_at=NOW
    )


def test_control_state_keeps_the_newest_of_each_kind() -> None:
    command = ControlCommand(
        action=CommandAction.PAUSE_TIER, key_id="k", seq=1, issued_at=NOW, expires_at=NOW + 1, tier="a"
    )
    records = [
        (0, _signed(_policy(1))),
        (1, _signed(_report(1))),
        (2, _signed(ControlReply(offset=0, accepted=True, reason="ok"))),
        (3, command.to_wire()),
        (4, b"junk"),
        (5, None),
        (6, _signed(_report(2))),
        (7, _signed(ControlReply(offset=3, accepted=False, reason="stale"))),
        (8, _signed(_policy(2))),
    ]
    state = control_state(reversed(records), trusted=TRUST)  # order does not matter within one call
    assert state.report is not None and state.report.version == 2
    assert state.policy is not None and state.policy.version == 2
    assert [(offset, reply.offset) for offset, reply in state.replies] == [(7, 3), (2, 0)]
    assert state.undecodable == 2 and state.unsigned == {}


def test_control_state_shows_only_what_a_trusted_key_signed() -> None:
    """The issue's forgeries: an unsigned update v1000, an accepted reply signed by another key, a report
    signed for another namespace. None is shown; each is counted."""
    forged_update = PolicyUpdate(version=1000, thresholds={"a": 0.0}, allowed_tiers=(), reason="x", issued_at=NOW)
    intruder = ControllerKey.generate("ctl")  # the controller's key id, another key
    records = [
        (0, _signed(_policy(3))),
        (1, _signed(_report(3))),
        (2, forged_update.to_wire()),
        (3, intruder.sign(ControlReply(offset=0, accepted=True, reason="paused"), "ns").to_wire()),
        (4, SIGNER.sign(_report(9, paused=("a",)), "another-namespace").to_wire()),
        (5, ControllerKey.generate("other").sign(_policy(7), "ns").to_wire()),
    ]
    state = control_state(records, trusted=TRUST)
    assert state.report is not None and state.report.version == 3
    assert state.policy is not None and state.policy.version == 3 and state.replies == []
    assert state.unsigned == {
        "update:unsigned": 1,
        "reply:bad_signature": 1,
        "report:bad_signature": 1,
        "update:unknown_key": 1,
    }
    rotated = TrustedKeys("ns", {"ctl": SIGNER.public_key, "other": intruder.public_key})
    assert control_state(records[:2], trusted=rotated).report is not None  # two keys trusted at once
    assert control_state(records, trusted=TrustedKeys("ns")).unsigned["report:unknown_key"] == 2
    doc = status_json(_snapshot(state))
    assert doc["undecodable"] == {"results": 2, "control": 0, "unsigned": 4}
    text = _text(render(_snapshot(state)))
    assert "not signed by a key in [control] public_keys, left out: reply:bad_signature 1" in text
    assert "controller: no signed report yet" in _text(render(_snapshot(control_state(records[2:], trusted=TRUST))))


def test_control_state_folds_older_chunks_without_replacing_newer() -> None:
    state = control_state([(10, _signed(_report(5)))], trusted=TRUST)
    assert not state.complete()
    control_state([(3, _signed(_report(4))), (2, _signed(_policy(4)))], state, trusted=TRUST)
    assert state.report is not None and state.report.version == 5
    assert state.policy is not None and state.policy.version == 4
    replies = [(i, _signed(ControlReply(offset=i, accepted=True, reason="ok"))) for i in range(REPLIES_SHOWN + 2)]
    control_state(replies, state, trusted=TRUST)
    assert len(state.replies) == REPLIES_SHOWN and state.replies[0][0] == REPLIES_SHOWN + 1
    assert not state.complete()  # a supervisor's pool report may still be further back
    control_state([(0, _signed(_pools(NOW)))], state, trusted=TRUST)
    assert state.complete()


def test_cost_vs_target() -> None:
    window = [_result(1, latency=100, cost=0.03), _result(2, latency=300, cost=0.01, confidence=0.7)]
    stats = window_stats(window, 4.0)
    targets = Targets(cost_per_request=0.01, cost_per_second=0.02, latency_ms=400.0, latency_quantile=0.5)
    assert cost_vs_target(targets, window, stats) == {
        "cost_per_request": {"target": 0.01, "observed": pytest.approx(0.02), "error_pct": 100.0},
        "cost_per_second": {"target": 0.02, "observed": pytest.approx(0.01), "error_pct": -50.0},
        "latency_ms": {"target": 400.0, "observed": 200.0, "error_pct": -50.0, "quantile": 0.5},
    }
    floor = cost_vs_target(Targets(quality_floor=0.5), window, stats)
    assert floor == {"quality_floor": {"target": 0.5, "observed": pytest.approx(0.6), "error_pct": 20.0}}
    assert cost_vs_target(Targets(), window, stats) == {}


def test_controller_json() -> None:
    assert controller_json(ControlState(), NOW) is None
    state = ControlState(
        report=_report(3, paused=("b",), pinned=True, rejected={"replay": 2}), policy=_policy(3), replies=[]
    )
    doc = controller_json(state, NOW)
    assert doc is not None
    assert set(doc) == {
        "targets",
        "observed",
        "version",
        "lam",
        "mu",
        "paused",
        "pinned",
        "rejected",
        "ignored",
        "at",
        "age_s",
        "thresholds",
        "base",
        "drift",
    }
    assert doc["drift"] == [] and doc["observed"]["explore_share"] == 0.0
    assert doc["targets"]["cost_per_request"] == 0.02 and doc["targets"]["latency_ms"] is None
    assert doc["observed"]["requests"] == 3 and doc["observed"]["cost_per_request"] == 0.03
    assert (doc["version"], doc["lam"], doc["mu"], doc["age_s"]) == (3, 0.5, 0.1, 2.0)
    assert doc["paused"] == ["b"] and doc["pinned"] is True and doc["rejected"] == {"replay": 2}
    assert doc["thresholds"] == {"a": pytest.approx(0.3)}
    assert controller_json(ControlState(report=_report(1)), NOW)["thresholds"] is None  # type: ignore[index]


def _snapshot(control: ControlState | None = None) -> Snapshot:
    return Snapshot(
        namespace="ns",
        bootstrap="host:9092",
        tiers=("a", "b"),
        at=NOW,
        window_s=10.0,
        results=[_result(1, 1.0, cost=0.01), _result(2, 50.0, cost=5.0), _result(3, 2.0, path=("a", "b"))],
        lag={"router": 1, "worker.a": 0, "worker.b": 4},
        uncommitted=["worker.b"],
        control=control or ControlState(),
        undecodable_results=2,
    )


def test_status_json_shape() -> None:
    control = ControlState(
        report=_report(2, paused=("b",)),
        policy=_policy(2),
        replies=[(9, ControlReply(offset=8, accepted=False, reason="bad_signature", key_id="ops", seq=4))],
        undecodable=1,
    )
    doc = status_json(_snapshot(control))
    assert set(doc) == {
        "namespace",
        "bootstrap",
        "at",
        "window_s",
        "results",
        "lag",
        "uncommitted_pools",
        "controller",
        "policy",
        "replies",
        "pools",
        "cost_vs_target",
        "undecodable",
        "truncated",
    }
    assert set(doc["results"]) == {
        "count",
        "rate",
        "by_status",
        "latency_ms",
        "cost_per_request",
        "cost_per_second",
        "escalation_rate",
        "mean_confidence",
        "answered_share",
        "tier_answers_per_s",
    }
    assert doc["results"]["count"] == 2  # the 50 s old result is outside the 10 s window
    assert doc["results"]["cost_per_request"] == pytest.approx(0.005)
    assert doc["lag"] == {"router": 1, "worker.a": 0, "worker.b": 4}
    assert doc["controller"]["version"] == 2
    assert doc["policy"] == {
        "version": 2,
        "thresholds": {"a": 0.2},
        "allowed_tiers": ["a"],
        "reason": "v2",
        "issued_at": NOW,
        "lam": 0.0,
        "mu": 0.0,
        "pinned": False,
        "rollout": None,
    }
    assert doc["replies"] == [
        {"offset": 8, "accepted": False, "reason": "bad_signature", "key_id": "ops", "seq": 4, "at": 0.0}
    ]
    assert doc["cost_vs_target"]["cost_per_request"]["error_pct"] == -75.0
    assert doc["undecodable"] == {"results": 2, "control": 1, "unsigned": 0}
    assert json.loads(json.dumps(doc)) == doc


def test_status_json_without_controller() -> None:
    doc = status_json(_snapshot())
    assert doc["controller"] is None and doc["policy"] is None
    assert doc["replies"] == [] and doc["cost_vs_target"] == {}


def _text(renderable: object) -> str:
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_render_without_and_with_controller() -> None:
    text = _text(render(_snapshot()))
    assert "controller: no report yet" in text
    assert "namespace ns" in text and "worker.b" in text and "no commits" in text
    assert "undecodable records skipped: results 2, control 0" in text
    control = ControlState(report=_report(2, paused=("b",)), policy=_policy(2))
    text = _text(render(_snapshot(control), error="broker gone"))
    assert "refresh failed: broker gone" in text
    assert "cost per request" in text and "-75.0%" in text
    assert "paused tiers: b" in text and "policy v2 (v2)" in text
    ignoring = ControlState(report=_report(2, ignored={"update:unsigned": 3}), policy=_policy(2))
    assert "ignored by the controller: update:unsigned 3" in _text(render(_snapshot(ignoring)))


def _pools(at: float, *sleeping: str) -> PoolReport:
    return PoolReport(
        pools=(
            PoolStatus(pool="router", desired=1, running=1, ready=1, low=1, high=4, reason="configured"),
            PoolStatus(
                pool="worker.b",
                desired=0 if "worker.b" in sleeping else 3,
                running=0 if "worker.b" in sleeping else 2,
                ready=0 if "worker.b" in sleeping else 2,
                low=0,
                high=4,
                autoscaled=True,
                lag=4,
                arrival_rate=12.5,
                service_rate=50.0,
                reason="scaled up: lag 400, for 1 s",
                changed_at=at,
            ),
        ),
        at=at,
        changed=("worker.b",),
    )


def test_pool_reports_are_read_newest_first_and_only_when_signed() -> None:
    records = [(1, _signed(_pools(NOW - 9))), (2, _pools(NOW - 5).to_wire()), (3, _signed(_pools(NOW - 2, "worker.b")))]
    state = control_state(records, trusted=TRUST)
    assert state.pools is not None and state.pools.at == NOW - 2
    assert state.unsigned == {"pools:unsigned": 1}
    doc = status_json(_snapshot(state))["pools"]
    assert doc["age_s"] == 2.0 and doc["changed"] == ["worker.b"]
    assert doc["pools"]["worker.b"]["desired"] == 0 and doc["pools"]["router"] == {
        "desired": 1,
        "running": 1,
        "ready": 1,
        "low": 1,
        "high": 4,
        "autoscaled": False,
        "lag": 0,
        "arrival_rate": 0.0,
        "service_rate": 0.0,
        "reason": "configured",
        "changed_at": 0.0,
    }
    assert status_json(_snapshot())["pools"] is None


def test_the_pools_table_shows_replicas_ready_range_and_the_last_decision() -> None:
    growing = _text(render(_snapshot(ControlState(pools=_pools(NOW - 1)))))
    assert "replicas as of 1 s ago" in growing
    row = next(line for line in growing.splitlines() if "worker.b" in line)
    assert "2/3" in row and "0-4 auto" in row and "scaled up: lag 400, for 1 s" in row
    asleep = _text(render(_snapshot(ControlState(pools=_pools(NOW - 1, "worker.b")))))
    assert "asleep" in next(line for line in asleep.splitlines() if "worker.b" in line)
    router = next(line for line in growing.splitlines() if line.lstrip("│ ").startswith("router"))
    assert "1/1" in router and "configured" not in router


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_status_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["status", *argv])


def test_parser_defaults() -> None:
    args = _parse("--portfolio", "simulated")
    assert (args.window, args.once, args.json, args.bootstrap, args.namespace) == (10.0, False, False, "", "")
    assert args.interval > 0 and args.config is None
    with pytest.raises(SystemExit):
        _parse("--once")  # --config or --portfolio is required
    with pytest.raises(SystemExit):
        _parse("--config", "x.toml", "--portfolio", "simulated")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--portfolio", "simulated", "--json"), "--json needs --once"),
        (("--portfolio", "simulated", "--window", "0"), "--window must be > 0"),
        (("--portfolio", "simulated", "--interval", "-1"), "--interval must be > 0"),
        (("--portfolio", "simulated", "--once"), "no bootstrap servers"),
        (("--portfolio", "nope", "--once"), "unknown portfolio"),
        (("--portfolio", "simulated", "--namespace", "bad name", "--bootstrap", "h:1"), "namespace"),
    ],
)
def test_run_status_refuses_bad_options(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_status(_parse(*argv))
