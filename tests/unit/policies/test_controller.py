"""The controller without Kafka: the law on a simulated plant, command checks, recovery."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.autoscale import ReplicaBounds
from policies.budget import LawParams
from policies.controller import ControllerCore, check_command, measure, report_due
from topics.control import (
    CommandAction,
    ControlCommand,
    ControllerKey,
    ControllerReport,
    ControlRecord,
    ControlReply,
    PolicyUpdate,
    Targets,
    TrustedKeys,
)
from topics.errors import DecodeError

from .plant import TIERS, Plant

KEY = b"secret"
NOW = 1_800_000_000.0
RATE = 300
"""Results per simulated second: about what the simulated pipeline runs at here."""


NAMESPACE = "unit"
SIGNER = ControllerKey.generate("ctl")
"""The controller's Ed25519 key: what it publishes is signed with it, and recovery trusts it."""
TRUST = TrustedKeys(NAMESPACE, {"ctl": SIGNER.public_key})


def core(**kw: object) -> ControllerCore:
    kw = {"keys": {"ops": KEY}, "trusted": TRUST, "window_s": 3.0} | kw
    return ControllerCore(TIERS, {"small": 0.8, "medium": 0.8}, **kw)  # type: ignore[arg-type]


def first_update(c: ControllerCore) -> PolicyUpdate:
    """The controller's first step, as it publishes it: version 1, signed."""
    update = c.step(NOW)
    assert update is not None
    return SIGNER.sign(update, NAMESPACE)


def published(record: ControlRecord | None) -> ControlRecord | None:
    """What the controller actor writes: its own records signed, commands as the operator sent them."""
    if record is None or isinstance(record, ControlCommand):
        return record
    return SIGNER.sign(record, NAMESPACE)


def drive(c: ControllerCore, plant: Plant, seconds: int, start: float) -> tuple[list[float], list[float], float]:
    """Run the closed loop: per second, RATE requests under the current thresholds, then one law step.
    Returns the per-second mean cost, λ after each step, and the clock."""
    costs, lams, now = [], [], start
    for _ in range(seconds):
        spent = []
        for i in range(RATE):
            now += 1 / RATE
            result = plant.run(f"r{i}", c.thresholds)
            spent.append(result.total_cost)
            c.observe(result, now)
        c.step(now)
        costs.append(float(np.mean(spent)))
        lams.append(c.lam)
    return costs, lams, now


def settled(costs: list[float], target: float, window: int = 10) -> int | None:
    """Seconds until the rolling mean over ``window`` s stays within ±5% of the target."""
    rolling = np.convolve(costs, np.ones(window) / window, "valid")
    inside = np.abs(rolling / target - 1) <= 0.05
    return next((i + window for i in range(len(inside)) if inside[i:].all()), None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cost_settles_within_5_percent_through_a_scripted_scenario(seed: int) -> None:
    """Steady load, target down, harder traffic, target up: each phase settles within 60 s."""
    c, plant = core(), Plant(random.Random(seed))
    c.step(NOW)  # publishes version 1: the base thresholds
    free, _, now = drive(c, plant, 20, NOW)
    baseline = float(np.mean(free))
    for target_share, hard in ((0.5, False), (0.5, True), (0.8, True)):
        target = baseline * target_share
        c.targets = Targets(cost_per_request=target)
        plant.hard = hard
        costs, lams, now = drive(c, plant, 90, now)
        when = settled(costs, target)
        assert when is not None and when <= 60, (target_share, hard, when)
        assert abs(np.mean(costs[-30:]) / target - 1) <= 0.05
        # No oscillation beyond a bound once settled: λ wanders by less than one step's worth.
        assert np.std(lams[-30:]) < 0.04


def test_no_step_exceeds_the_bound_and_lambda_stays_in_its_range() -> None:
    c, plant = core(params=LawParams(step=0.02)), Plant(random.Random(4))
    c.step(NOW)
    c.targets = Targets(cost_per_request=1e-9)  # unreachable: λ runs to its ceiling and stops there
    _, lams, _ = drive(c, plant, 60, NOW)
    steps = np.abs(np.diff([0.0, *lams]))
    assert steps.max() <= 0.02 + 1e-12
    assert max(lams) == pytest.approx(0.8)  # the ceiling: every threshold is 0
    assert c.thresholds == {"small": 0.0, "medium": 0.0}


def test_the_latency_guard_cuts_escalation_into_a_slow_tier() -> None:
    c, plant = core(), Plant(random.Random(5), latency_scale={"large": 3.0})
    c.step(NOW)
    c.targets = Targets(latency_ms=500.0)
    _, _, now = drive(c, plant, 60, NOW)
    assert c.mu > 0
    assert c.thresholds["medium"] < c.thresholds["small"]  # the gate in front of the slow tier moved most
    p95 = measure(c.window, now, 0.95).latency_ms
    assert p95 <= 500.0 * 1.05


def command(action: CommandAction = CommandAction.SET_TARGETS, *, key: bytes = KEY, **kw: object) -> ControlCommand:
    fields: dict[str, object] = {"key_id": "ops", "seq": 10, "issued_at": NOW, "expires_at": NOW + 60}
    if action is CommandAction.SET_TARGETS:
        fields["targets"] = Targets(cost_per_request=0.01)
    fields |= kw
    return ControlCommand(action=action, **fields).signed(key)  # type: ignore[arg-type]


def check(cmd: ControlCommand, **kw: object) -> str | None:
    args: dict[str, object] = {
        "keys": {"ops": KEY},
        "last_seq": {"ops": 5},
        "tiers": TIERS,
        "paused": frozenset(),
        "versions": [1, 2],
        "now": NOW,
        "pools": POOLS,
    }
    return check_command(cmd, **(args | kw))  # type: ignore[arg-type]


POOLS = {
    "router": ReplicaBounds(1, 4, 4),
    "verifier": ReplicaBounds(1, 4, 4),
    "worker.small": ReplicaBounds(1, 2, 2),
    "worker.large": ReplicaBounds(0, 3, 8),  # autoscaled: may sleep, up to max_replicas 3
}
"""Pools and the most replicas each can use (their topics' partitions)."""


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: command(), None),
        (lambda: command(key_id="someone"), "unknown_key"),
        (lambda: msgspec.structs.replace(command(), sig=""), "unsigned"),
        (lambda: command(key=b"wrong"), "bad_signature"),
        (lambda: msgspec.structs.replace(command(), seq=11), "bad_signature"),  # tampered after signing
        (lambda: command(seq=5), "replayed"),
        (lambda: command(expires_at=NOW - 1), "expired"),
        (lambda: command(issued_at=NOW + 3600, expires_at=NOW + 3700), "not_yet_valid"),
        (lambda: command(expires_at=NOW + 10 * 86400), "validity_too_long"),
        (lambda: command(targets=Targets()), "no_targets"),
        (lambda: command(CommandAction.SET_THRESHOLDS, thresholds={"huge": 0.5}), "unknown_tier"),
        (lambda: command(CommandAction.PAUSE_TIER, tier="huge"), "unknown_tier"),
        (lambda: command(CommandAction.PIN_POLICY, policy_version=9), "unknown_version"),
        (lambda: command(CommandAction.SCALE_POOL, pool="worker.small", replicas=2), None),
        (lambda: command(CommandAction.SCALE_POOL, pool="worker.huge", replicas=2), "unknown_pool"),
        (lambda: command(CommandAction.SCALE_POOL, pool="router", replicas=0), "too_few_replicas"),
        (lambda: command(CommandAction.SCALE_POOL, pool="worker.small", replicas=3), "more_replicas_than_partitions"),
        (lambda: command(CommandAction.SCALE_POOL, pool="worker.large", replicas=0), None),
        (lambda: command(CommandAction.SCALE_POOL, pool="worker.large", replicas=4), "above_max_replicas"),
    ],
)
def test_every_bad_command_is_refused_with_its_reason(make: Callable[[], ControlCommand], reason: str | None) -> None:
    assert check(make()) == reason


def test_an_accepted_scale_command_is_answered_and_changes_no_policy() -> None:
    c = core()
    c.pools = POOLS
    c.step(NOW)
    version = c.version
    reply, update = c.handle(3, command(CommandAction.SCALE_POOL, pool="router", replicas=3, seq=20), NOW)
    assert reply.accepted and update is None and c.version == version
    assert reply.reason == "pool router to 3 replicas, by ops"


def test_pausing_the_last_running_tier_is_refused() -> None:
    cmd = command(CommandAction.PAUSE_TIER, tier="large")
    assert check(cmd, paused=frozenset({"small", "medium"})) == "no_tier_left"


def test_a_refused_command_changes_nothing_and_is_counted() -> None:
    c = core()
    c.step(NOW)
    before = (c.targets, c.version, dict(c.thresholds), set(c.paused))
    reply, update = c.handle(7, command(key=b"wrong"), NOW)
    assert not reply.accepted and reply.reason == "bad_signature" and update is None
    assert (c.targets, c.version, dict(c.thresholds), set(c.paused)) == before
    assert c.rejected == {"bad_signature": 1}


def test_accepted_commands_apply_and_a_replay_of_them_is_refused() -> None:
    c = core()
    c.step(NOW)
    reply, update = c.handle(3, command(CommandAction.PAUSE_TIER, tier="medium", seq=20), NOW)
    assert reply.accepted and update is not None and update.allowed_tiers == ("small", "large")
    reply, _ = c.handle(4, command(CommandAction.PAUSE_TIER, tier="medium", seq=20), NOW)
    assert reply.reason == "replayed"
    reply, update = c.handle(5, command(CommandAction.SET_THRESHOLDS, thresholds={"small": 0.6}, seq=21), NOW)
    assert reply.accepted and update is not None and update.thresholds["small"] == pytest.approx(0.6)
    reply, update = c.handle(6, command(CommandAction.PIN_POLICY, policy_version=1, seq=22), NOW)
    assert reply.accepted and update is not None and update.pinned and update.thresholds["small"] == 0.8


def test_a_restarted_controller_recovers_its_state_from_the_control_topic() -> None:
    c, plant = core(), Plant(random.Random(6))
    records: list[tuple[int, ControlRecord | None]] = []
    records.append((0, c.step(NOW)))
    records.append((1, c.handle(1, command(seq=30), NOW)[1]))
    records.append((2, c.handle(2, command(CommandAction.PAUSE_TIER, tier="medium", seq=31), NOW)[1]))
    c.targets = Targets(cost_per_request=0.003)
    drive(c, plant, 10, NOW)
    records.append((3, c.report(NOW + 10)))
    # After the last report: one command answered (accepted) before the crash, one never answered.
    answered = command(CommandAction.RESUME_TIER, tier="medium", seq=32)
    reply, update = c.handle(4, answered, NOW)
    records += [(4, answered), (5, reply), (6, update), (7, command(CommandAction.PAUSE_TIER, tier="small", seq=33))]
    fresh = core()
    pending = fresh.recover((offset, r) for offset, r in ((o, published(r)) for o, r in records) if r is not None)
    assert (fresh.targets, fresh.lam, fresh.version) == (c.targets, c.lam, c.version)
    assert fresh.paused == set()  # the answered resume is applied again, without a second reply
    assert fresh.last_seq == {"ops": 32} and fresh.processed_offset == 4
    assert [offset for offset, _ in pending] == [7]  # only the unanswered command is left to answer
    replay, _ = fresh.handle(8, command(seq=31), NOW)
    assert replay.reason == "replayed"  # replay protection survives the restart
    assert fresh.ignored == {}


def _unsigned_pause(tier: str, seq: int) -> ControlCommand:
    return ControlCommand(
        action=CommandAction.PAUSE_TIER, key_id="ops", seq=seq, issued_at=NOW, expires_at=NOW + 60, tier=tier
    )


def test_recovery_ignores_forged_replies_and_answers_their_commands_now() -> None:
    """The issue's attack: unsigned pause commands for every tier, each with a forged accepted reply,
    written while the controller was down. None is applied; each is left to be refused now."""
    c = core()
    records: list[tuple[int, ControlRecord | DecodeError]] = [(0, first_update(c))]
    records.append((1, SIGNER.sign(c.report(NOW), NAMESPACE)))
    attacker = ControllerKey.generate("ctl")  # the controller's key id, another key
    forgeries: list[Callable[[ControlReply], ControlReply]] = [
        lambda r: r,  # unsigned
        lambda r: attacker.sign(r, NAMESPACE),  # bad_signature
        lambda r: ControllerKey.generate("intruder").sign(r, NAMESPACE),  # unknown_key
    ]
    offset = 2
    for forge, tier in zip(forgeries, TIERS, strict=True):
        pause = _unsigned_pause(tier, 40 + offset)
        reply = ControlReply(offset=offset, accepted=True, reason="paused", key_id="ops", seq=pause.seq, at=NOW)
        records += [(offset, pause), (offset + 1, forge(reply))]
        offset += 2
    another_namespace = SIGNER.sign(
        ControlReply(offset=offset, accepted=True, reason="x", key_id="ops", seq=99), "other-deployment"
    )
    records += [(offset, _unsigned_pause("small", 99)), (offset + 1, another_namespace)]
    fresh = core()
    pending = fresh.recover(records)
    assert fresh.paused == set() and fresh.version == 1
    assert [o for o, _ in pending] == [2, 4, 6, 8]  # every command is still to be answered...
    for o, cmd in pending:
        assert isinstance(cmd, ControlCommand)
        reply, update = fresh.handle(o, cmd, NOW + 5)
        assert not reply.accepted and reply.reason == "unsigned" and update is None  # ...and is refused
    assert fresh.paused == set()
    assert fresh.ignored == {"reply:unsigned": 1, "reply:bad_signature": 2, "reply:unknown_key": 1}


def test_recovery_reapplies_an_expired_accepted_command_but_not_one_whose_hmac_fails() -> None:
    c = core()
    c.step(NOW)
    report = SIGNER.sign(c.report(NOW - 1), NAMESPACE)  # the last report before the command
    good = command(CommandAction.PAUSE_TIER, tier="medium", seq=50)
    reply, _ = c.handle(1, good, NOW)
    assert reply.accepted
    records: list[tuple[int, ControlRecord | DecodeError]] = [
        (0, report),
        (1, good),
        (2, SIGNER.sign(reply, NAMESPACE)),
    ]
    later = core()
    later.recover(records)  # a day later: the command has expired, it was valid when accepted
    assert later.paused == {"medium"} and later.last_seq == {"ops": 50} and later.ignored == {}
    rotated = core(keys={"ops2": b"new key"})  # the command's key is gone: its signature no longer checks
    rotated.recover(records)
    assert rotated.paused == set() and rotated.ignored == {"command:unknown_key": 1}
    tampered = msgspec.structs.replace(good, tier="small")  # same key, seq; the HMAC fails
    genuine = core()
    genuine.recover([records[0], (1, tampered), records[2]])
    assert genuine.paused == set() and genuine.ignored == {"command:bad_signature": 1}


def test_recovery_ignores_a_reply_that_names_another_command() -> None:
    c = core()
    c.step(NOW)
    first = command(CommandAction.PAUSE_TIER, tier="medium", seq=60)
    reply, _ = c.handle(1, first, NOW)
    other = command(CommandAction.PAUSE_TIER, tier="small", seq=61)  # a command at the same offset, later
    fresh = core()
    pending = fresh.recover([(1, other), (2, SIGNER.sign(reply, NAMESPACE))])
    assert fresh.paused == set() and [o for o, _ in pending] == [1]
    assert fresh.ignored == {"reply:other_command": 1}


def test_recovery_ignores_forged_updates_and_reports_and_old_reports_copied_forward() -> None:
    c = core()
    genuine = first_update(c)
    c.targets = Targets(cost_per_request=0.004)
    c.handle(1, command(seq=70, targets=Targets(cost_per_request=0.004)), NOW)
    newest = SIGNER.sign(c.report(NOW + 2), NAMESPACE)
    older = SIGNER.sign(msgspec.structs.replace(c.report(NOW), processed_offset=-1, targets=Targets()), NAMESPACE)
    forged_update = PolicyUpdate(
        version=1000, thresholds={"small": 0.0, "medium": 0.0}, allowed_tiers=("large",), reason="x", issued_at=NOW
    )
    forged_report = ControllerReport(
        targets=Targets(), observed=c.last_observed, version=1000, lam=0.0, mu=0.0, at=NOW + 9, paused=TIERS[:2]
    )
    fresh = core()
    fresh.recover([(0, genuine), (2, newest), (3, forged_update), (4, forged_report), (5, older)])
    assert fresh.version == 1 and fresh.paused == set() and 1000 not in fresh.history
    assert fresh.targets == Targets(cost_per_request=0.004)  # the newest genuine report, not the copy after it
    assert fresh.ignored == {"update:unsigned": 1, "report:unsigned": 1}
    assert fresh.report(NOW).ignored == {"update:unsigned": 1, "report:unsigned": 1}


finite = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(
    action=st.sampled_from(list(CommandAction)),
    key_id=st.sampled_from(["ops", "other", "x"]),
    seq=st.integers(0, 2**40),
    issued=finite,
    expires=finite,
    tier=st.sampled_from(["", "small", "medium", "large", "nope"]),
    version=st.integers(0, 5),
    thresholds=st.none() | st.dictionaries(st.sampled_from(["small", "large", "zzz"]), finite, max_size=3),
    cost=st.none() | finite,
    signed=st.booleans(),
)
def test_fuzzed_commands_never_crash_and_only_valid_ones_pass(**kw: object) -> None:
    """Whatever arrives either fails to decode (a reason code) or gets a verdict; nothing raises."""
    from topics.control import decode_control
    from topics.errors import DecodeError

    raw = msgspec.msgpack.encode(
        {
            "k": "control_command@1",
            "a": str(kw["action"]),
            "kid": kw["key_id"],
            "sq": kw["seq"],
            "ia": kw["issued"],
            "ex": kw["expires"],
            "t": kw["tier"],
            "pv": kw["version"],
            **({"th": kw["thresholds"]} if kw["thresholds"] is not None else {}),
            **({"tg": {"cr": kw["cost"]}} if kw["cost"] is not None else {}),
        }
    )
    try:
        cmd = decode_control(raw)
    except DecodeError as exc:
        assert exc.reason in {"out_of_range", "wrong_type", "missing_field"}
        return
    assert isinstance(cmd, ControlCommand)
    if kw["signed"]:
        cmd = cmd.signed(KEY)
    verdict = check(cmd)
    if verdict is None:
        assert kw["signed"] and cmd.key_id == "ops" and cmd.seq > 5
        assert cmd.expires_at >= NOW - 1 and cmd.issued_at <= NOW + 30
        numbers = [*(cmd.thresholds or {}).values()]
        if cmd.targets is not None and cmd.targets.cost_per_request is not None:
            numbers.append(cmd.targets.cost_per_request)
        assert all(math.isfinite(x) and x >= 0 for x in numbers)
        assert all(0 <= v <= 1 for v in (cmd.thresholds or {}).values())


def test_reports_slow_down_while_the_state_holds_still_and_resume_when_it_moves() -> None:
    """An idle deployment publishes a report a minute, not one every 2 s (its control readers can rest)."""
    c = core()
    c.step(NOW)
    last = c.report(NOW)
    assert report_due(last, None, 2.0, 60.0)
    assert not report_due(c.report(NOW + 2.5), last, 2.0, 60.0)  # the same state: not yet
    assert report_due(c.report(NOW + 60.0), last, 2.0, 60.0)
    reply, _ = c.handle(3, command(targets=Targets(cost_per_request=0.5)), NOW + 1.0)
    assert reply.accepted
    assert report_due(c.report(NOW + 2.5), last, 2.0, 60.0)  # the state moved: the usual period
    assert not report_due(c.report(NOW + 1.5), last, 2.0, 60.0)


def test_exploration_spend_counts_in_the_cost_and_its_share_is_held_to_its_part_of_the_budget() -> None:
    from policies.exploration import ExplorationConfig
    from topics.messages import Answer, Request, Result, Status, Task

    c = core(exploration=ExplorationConfig(share=0.2, max_cost_share=0.1), targets=Targets(cost_per_request=1.0))
    assert first_update(c).explore_share == 0.2  # nothing measured yet: the configured share
    now = NOW
    for i in range(100):  # 100 requests at 0.5 each; one in five explored, its copies costing 2.0
        now += 0.01
        explored = i % 5 == 0
        c.observe(Result(f"r{i}", Status.OK, tier="small", total_cost=0.5, completed_at=now, explored=explored), now)
        if explored:
            copy = Task(Request(f"r{i}", "q", now), "large", explored=True, explore_copy=True)
            c.observe_copy(Answer(copy, "m", "o", 0.9, cost=2.0), now)
    update = c.step(now)
    assert update is not None and update.explore_share == pytest.approx(0.05)  # 0.05 x 2.0 = 0.1 x budget 1.0
    observed = c.last_observed
    assert observed.explore_cost_per_request == pytest.approx(20 * 2.0 / 100)
    assert observed.cost_per_request == pytest.approx(0.5 + 0.4)  # the law steers what the copies cost too
    assert observed.explored_requests == 20


def test_without_exploration_the_observation_is_the_results_alone() -> None:
    c = core()
    assert first_update(c).explore_share is None
    assert c.last_observed.explore_share == 0.0 and c.last_observed.explore_cost_per_request == 0.0


def _judged(rid: str, accepted: bool, at: float) -> object:
    from topics.messages import Decision, Result, Status

    verdict = Decision("verify", "threshold", "accept" if accepted else "escalate", "small", 0.7)
    return Result(rid, Status.OK, tier="small", path=("small",), completed_at=at, why=(verdict,))


def test_the_controller_reports_drift_under_the_same_thresholds_with_its_window() -> None:
    from policies.drift import DriftConfig

    c = core(drift_config=DriftConfig(window_s=10.0, min_answers=100, buckets=10), pinned=True)
    rng, now = random.Random(5), NOW
    for second in range(40):  # the small tier's answers: 80% accepted, then 40% after 20 s
        rate = 0.8 if second < 20 else 0.4
        for i in range(50):
            now += 0.02
            c.observe(_judged(f"r{second}-{i}", rng.random() < rate, now), now)  # type: ignore[arg-type]
        c.step(now)
        if second < 20:
            assert c.report(now).drift == (), "a stable tier raised an alarm"
    (alarm,) = c.report(now).drift
    assert alarm.startswith("tier small: acceptance") and "against 8" in alarm  # the reference's 80%


def test_a_threshold_moved_on_purpose_restarts_the_acceptance_reference() -> None:
    from policies.drift import DriftConfig

    c = core(drift_config=DriftConfig(window_s=10.0, min_answers=100, buckets=10), pinned=True)
    now = NOW
    for i in range(1500):  # 15 s of a steady tier: its reference is taken
        now += 0.01
        c.observe(_judged(f"r{i}", i % 5 != 0, now), now)  # type: ignore[arg-type]
    c.step(now)
    assert c.drift.references["small"].tally() is not None
    c.thresholds = {"small": 0.5, "medium": 0.8}  # as a pin or the law would set it
    c.step(now + 0.1)
    assert c.drift_basis["small"] == 0.5 and c.drift.references["small"].tally() is None


def _push(mode: str, seq: int, share: float = 1.0, post: str = "threshold", rollout: object = None) -> ControlCommand:
    import json as json_

    from topics.rollout import Rollout, RolloutMode, policy_digest

    doc = {"format": "tierflow-policy", "version": 1, "name": "threshold", "tiers": list(TIERS),
           "pre_call": {"name": "cheapest_first"},
           "post_hoc": {"name": post, "params": {"thresholds": {"small": 0.3, "medium": 0.5}}}}  # fmt: skip
    text = json_.dumps(doc)
    made = Rollout(text, policy_digest(text), RolloutMode(mode), share, "threshold")
    return command(CommandAction.PUSH_POLICY, rollout=rollout or made, seq=seq)


def test_a_pushed_policy_rides_in_the_next_version_and_pin_rolls_it_back() -> None:
    c = core()
    c.step(NOW)  # v1: the deployment's own policy
    reply, update = c.handle(3, _push("canary", 20, share=0.1), NOW)
    assert reply.accepted and update is not None and update.rollout is not None
    assert update.version == 2 and update.rollout.share == 0.1 and "canary on 10%" in reply.reason
    reply, update = c.handle(4, _push("live", 21), NOW)  # live: the law now steers the pushed policy's thresholds
    assert reply.accepted and update is not None and update.live_policy is not None and update.rollout is None
    assert update.live_policy.policy == ""  # its text rode in v2 already: named by digest
    assert c.base == {"small": 0.3, "medium": 0.5} and update.thresholds == {"small": 0.3, "medium": 0.5}
    reply, update = c.handle(5, _push("shadow", 22, post="threshold"), NOW)  # beside the pushed live one
    assert update is not None and update.live_policy is not None and update.rollout is not None
    assert c.base == {"small": 0.3, "medium": 0.5}
    reply, update = c.handle(6, command(CommandAction.PIN_POLICY, policy_version=1, seq=23), NOW)
    assert reply.accepted and update is not None and update.pinned
    assert update.rollout is None and update.live_policy is None
    assert c.base == {"small": 0.8, "medium": 0.8} and "the config's own policy" in reply.reason


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _push("canary", 20, share=1.0), "bad_canary_share"),
        (lambda: _push("live", 20, post="no_such_policy"), "bad_policy"),
        (lambda: command(CommandAction.PUSH_POLICY, seq=20), "no_policy"),
    ],
)
def test_a_push_that_cannot_run_is_refused(make: Callable[[], ControlCommand], reason: str) -> None:
    c = core()
    c.step(NOW)
    reply, update = c.handle(3, make(), NOW)
    assert (reply.accepted, reply.reason, update) == (False, reason, None)


def test_a_push_whose_text_does_not_match_its_digest_is_refused() -> None:
    import msgspec as msgspec_

    forged = msgspec_.structs.replace(_push("live", 20).rollout, policy="{}")  # type: ignore[type-var]
    assert check(_push("live", 20, rollout=forged)) == "bad_digest"


def test_recovery_restores_the_pushed_policy_from_the_newest_update() -> None:
    c = core()
    records: list[tuple[int, ControlRecord | DecodeError]] = [(0, published(c.step(NOW)))]  # type: ignore[list-item]
    push = _push("shadow", 20)
    reply, update = c.handle(1, push, NOW)
    records += [(1, push), (2, published(update)), (3, published(reply))]  # type: ignore[list-item]
    fresh = core()
    assert fresh.recover(records) == []
    assert fresh.rollout is not None and fresh.rollout == c.rollout and fresh.rollouts[2] == (None, c.rollout)
    assert fresh.texts == c.texts and fresh.published == {fresh.rollout.digest}
