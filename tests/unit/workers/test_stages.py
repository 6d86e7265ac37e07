"""Router, verifier and model-worker decisions, driven without Kafka or Ray."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from policies import CheapestFirst, ConfidenceThreshold
from topics import Answer, DecodeError, Hints, HistoryEntry, Request, Result, Status, Task
from topics.control import PolicyUpdate
from workers.backends.base import Backend, Completion, Query
from workers.context import StageContext
from workers.model_worker import ModelWorker
from workers.policy_feed import PolicyFeed
from workers.router import Router
from workers.verifier import Verifier

from .helpers import TRACE, config, inbound

NOW = 1000.0


def _ctx(**overrides: Any) -> StageContext:
    return StageContext(config(**overrides), clock=lambda: NOW)


def _request(rid: str = "r1", deadline: float | None = None, hints: Hints | None = None) -> Request:
    return Request(rid, "text", created_at=NOW - 1, deadline=deadline, hints=hints or Hints())


async def test_router_sends_to_the_cheapest_tier_with_a_default_deadline() -> None:
    ctx = _ctx()
    (out,) = await Router(ctx, CheapestFirst()).process([inbound(_request())])
    assert out.topic == "unit.tier.small" and out.key == "r1" and out.headers == TRACE
    task = Task.from_wire(out.value)
    assert (task.tier, task.hop, task.allowed) == ("small", 0, ("small", "large"))
    assert task.request.deadline == pytest.approx(NOW - 1 + ctx.deployment.limits.default_deadline_s)


async def test_router_rejects_requests_with_no_known_allowed_tier() -> None:
    request = _request(hints=Hints(allowed_tiers=("huge",)))
    (out,) = await Router(_ctx(), CheapestFirst()).process([inbound(request)])
    result = Result.from_wire(out.value)
    assert out.topic == "unit.results" and result.status is Status.REJECTED and result.reason


async def test_router_expires_stale_requests() -> None:
    (out,) = await Router(_ctx(), CheapestFirst()).process([inbound(_request(deadline=NOW - 0.5))])
    assert Result.from_wire(out.value).status is Status.EXPIRED


def _answer(
    tier: str, confidence: float, hop: int = 0, history: tuple[HistoryEntry, ...] = (), deadline: float | None = None
) -> Answer:
    task = Task(_request(deadline=deadline), tier, hop=hop, history=history, policy_version=3)
    return Answer(task, f"m-{tier}", f"out-{tier}", confidence, cost=0.5 if tier == "large" else 0.01)


def _verifier(ctx: StageContext | None = None) -> Verifier:
    return Verifier(ctx or _ctx(), ConfidenceThreshold(thresholds={"small": 0.8, "large": 0.8}))


async def test_verifier_accepts_confident_answers() -> None:
    (out,) = await _verifier().process([inbound(_answer("small", 0.9))])
    result = Result.from_wire(out.value)
    assert (result.status, result.tier, result.output, result.path) == (Status.OK, "small", "out-small", ("small",))
    assert result.policy_version == 3 and result.latency_ms == pytest.approx(1000.0)


async def test_verifier_escalates_with_history_and_names_the_source_answer() -> None:
    answer = _answer("small", 0.3)
    (out,) = await _verifier().process([inbound(answer)])
    assert out.topic == "unit.escalate.large"
    task = Task.from_wire(out.value)
    assert (task.tier, task.hop, task.source_answer) == ("large", 1, answer.answer_id)
    assert task.history == (answer.as_history(),)


async def test_verifier_delivers_the_best_answer_seen_when_exhausted() -> None:
    first = _answer("small", 0.7).as_history()
    (out,) = await _verifier().process([inbound(_answer("large", 0.4, hop=1, history=(first,)))])
    result = Result.from_wire(out.value)
    assert (result.status, result.tier, result.confidence) == (Status.EXHAUSTED, "small", 0.7)
    assert result.path == ("small", "large") and result.total_cost == pytest.approx(0.51)


async def test_verifier_caps_escalation_at_max_hops() -> None:
    ctx = _ctx(limits={"max_hops": 1})
    (out,) = await _verifier(ctx).process([inbound(_answer("small", 0.1))])
    result = Result.from_wire(out.value)
    assert result.status is Status.EXHAUSTED and "hop limit" in (result.reason or "")


async def test_verifier_expires_instead_of_escalating_past_the_deadline() -> None:
    (out,) = await _verifier().process([inbound(_answer("small", 0.1, deadline=NOW - 1))])
    assert Result.from_wire(out.value).status is Status.EXPIRED


def test_verifier_dead_letters_unknown_tiers() -> None:
    with pytest.raises(DecodeError) as err:
        _verifier().decode(_answer("huge", 0.9).to_wire())
    assert err.value.reason == "unknown_tier"


class ScriptedBackend(Backend):
    """Returns fixed confidences, or fails, to drive the worker's guards."""

    def __init__(self, confidences: Sequence[float] = (), error: Exception | None = None) -> None:
        super().__init__("small", {})
        self.confidences, self.error = list(confidences), error

    async def infer(self, batch: Sequence[Query]) -> list[Completion]:
        if self.error:
            raise self.error
        return [
            Completion(f"o{i}", c, {"max_prob": c, "bad": math.nan}, cost=0.01) for i, c in enumerate(self.confidences)
        ]


def _tasks(n: int, deadline: float | None = None) -> list[Any]:
    return [inbound(Task(_request(f"r{i}", deadline=deadline), "small")) for i in range(n)]


async def test_worker_turns_invalid_confidences_into_errors_that_escalate() -> None:
    worker = ModelWorker(_ctx(), "small", ScriptedBackend([0.9, math.nan, math.inf, -0.1, 1.5]))
    answers = [Answer.from_wire(o.value) for o in await worker.process(_tasks(5))]
    assert [a.error is None for a in answers] == [True, False, False, False, False]
    assert all(0.0 <= a.confidence <= 1.0 for a in answers)
    assert all("bad" not in a.features for a in answers)


@pytest.mark.parametrize(
    ("error", "reason"), [(RuntimeError("boom"), "backend error: RuntimeError"), (TimeoutError(), "timeout")]
)
async def test_worker_answers_every_task_when_the_backend_fails(error: Exception, reason: str) -> None:
    worker = ModelWorker(_ctx(), "small", ScriptedBackend(error=error))
    answers = [Answer.from_wire(o.value) for o in await worker.process(_tasks(3))]
    assert [a.error for a in answers] == [reason] * 3


async def test_worker_ends_expired_tasks_without_calling_the_backend() -> None:
    worker = ModelWorker(_ctx(), "small", ScriptedBackend(error=AssertionError("must not be called")))
    outs = await worker.process(_tasks(2, deadline=NOW - 1))
    assert {Result.from_wire(o.value).status for o in outs} == {Status.EXPIRED}


def test_worker_rejects_tasks_for_another_tier() -> None:
    worker = ModelWorker(_ctx(), "small", ScriptedBackend())
    with pytest.raises(DecodeError):
        worker.decode(Task(_request(), "large").to_wire())


def _following(update: PolicyUpdate) -> PolicyFeed:
    """A feed that has already read ``update`` (never started: no broker in unit tests)."""
    feed = PolicyFeed({}, "unit.control")
    feed.current = update
    return feed


async def test_verifier_applies_the_newest_policy_update_and_stamps_its_version() -> None:
    update = PolicyUpdate(
        version=7, thresholds={"small": 0.2}, allowed_tiers=("small", "large"), reason="", issued_at=0
    )
    verifier = Verifier(_ctx(), ConfidenceThreshold(thresholds={"small": 0.8}), _following(update))
    (out,) = await verifier.process([inbound(_answer("small", 0.5))])  # 0.5 < 0.8, but >= the update's 0.2
    result = Result.from_wire(out.value)
    assert result.status is Status.OK and result.policy_version == 7


async def test_a_paused_tier_is_skipped_by_routing_and_escalation() -> None:
    ladder = (("small", 0.01), ("medium", 0.1), ("large", 1.0))
    ctx = _ctx(tiers=[{"name": name, "backend": "simulated", "cost": cost} for name, cost in ladder])
    update = PolicyUpdate(version=4, thresholds={}, allowed_tiers=("small", "large"), reason="", issued_at=0)
    (routed,) = await Router(ctx, CheapestFirst(), _following(update)).process([inbound(_request())])
    task = Task.from_wire(routed.value)
    assert (task.tier, task.allowed, task.policy_version) == ("small", ("small", "large"), 4)
    verifier = Verifier(ctx, ConfidenceThreshold(thresholds={"small": 0.8, "medium": 0.8}), _following(update))
    (escalated,) = await verifier.process([inbound(_answer("small", 0.3))])
    assert escalated.topic == "unit.escalate.large" and Task.from_wire(escalated.value).policy_version == 4


def test_resident_memory_is_read_from_proc() -> None:
    from workers.stage import resident_mb

    assert 5 < resident_mb() < 100_000  # this test process: tens to hundreds of MB


async def test_an_explored_request_goes_its_way_and_its_copies_to_every_other_tier() -> None:
    ctx = _ctx(exploration={"share": 1.0})
    outs = await Router(ctx, CheapestFirst()).process([inbound(_request())])
    tasks = {out.topic: Task.from_wire(out.value) for out in outs}
    assert set(tasks) == {"unit.tier.small", "unit.tier.large"}
    first, copy = tasks["unit.tier.small"], tasks["unit.tier.large"]
    assert first.explored and not first.explore_copy and copy.explore_copy
    assert first.propensities == copy.propensities == {"small": 1.0, "large": 1.0}


async def test_without_a_draw_the_request_records_its_propensities_and_goes_alone() -> None:
    update = PolicyUpdate(
        version=2, thresholds={}, allowed_tiers=("small", "large"), reason="", issued_at=0, explore_share=0.0
    )  # the controller's bound overrides the configured share
    (out,) = await Router(_ctx(exploration={"share": 1.0}), CheapestFirst(), _following(update)).process(
        [inbound(_request())]
    )
    task = Task.from_wire(out.value)
    assert not task.explored and task.propensities == {"small": 1.0, "large": 0.0}
    (plain,) = await Router(_ctx(), CheapestFirst()).process([inbound(_request())])
    assert Task.from_wire(plain.value).propensities == {}  # exploration off: nothing to record


async def test_a_copy_is_answered_onto_the_explored_topic_and_never_ends_its_request() -> None:
    worker = ModelWorker(_ctx(), "small", ScriptedBackend([0.9]))
    copy = Task(_request(), "small", explored=True, explore_copy=True)
    (out,) = await worker.process([inbound(copy)])
    assert out.topic == "unit.explored" and Answer.from_wire(out.value).task.explore_copy
    late = Task(_request(deadline=NOW - 1), "small", explore_copy=True)
    assert await worker.process([inbound(late)]) == []  # expired: dropped, its request ends on its own path


async def test_the_result_of_an_explored_request_says_so_with_its_propensities() -> None:
    task = Task(_request(), "small", explored=True, propensities={"small": 1.0, "large": 0.2})
    answer = Answer(task=task, model="m", output="x", confidence=0.95)
    (out,) = await _verifier().process([inbound(answer)])
    result = Result.from_wire(out.value)
    assert result.explored and result.propensities == {"small": 1.0, "large": 0.2}


PUSHED = (
    '{"format": "tierflow-policy", "version": 1, "name": "threshold", "tiers": ["small", "large"], '
    '"pre_call": {"name": "cheapest_first"}, '
    '"post_hoc": {"name": "threshold", "params": {"thresholds": {"small": 0.1}}}}'
)


def _pushed(mode: str, share: float = 1.0) -> PolicyFeed:
    from topics.rollout import Rollout, RolloutMode, policy_digest

    rollout = Rollout(PUSHED, policy_digest(PUSHED), RolloutMode(mode), share, "threshold")
    slot = {"live_policy": rollout} if mode == "live" else {"rollout": rollout}
    return _following(PolicyUpdate(5, {}, ("small", "large"), reason="", issued_at=0, **slot))  # type: ignore[arg-type]


async def test_a_live_pushed_policy_decides_at_the_version_boundary() -> None:
    verifier = Verifier(_ctx(), ConfidenceThreshold(thresholds={"small": 0.8}), _pushed("live"))
    (out,) = await verifier.process([inbound(_answer("small", 0.5))])  # own policy escalates 0.5; pushed accepts
    result = Result.from_wire(out.value)
    assert result.status is Status.OK and result.policy_version == 5 and not result.canary and result.shadow == ()


async def test_a_shadow_policy_is_logged_at_each_hop_and_changes_nothing() -> None:
    feed = _pushed("shadow")
    (routed,) = await Router(_ctx(), CheapestFirst(), feed).process([inbound(_request())])
    task = Task.from_wire(routed.value)
    assert [(d.stage, d.action, d.tier) for d in task.shadow] == [("route", "start", "small")]
    verifier = Verifier(_ctx(), ConfidenceThreshold(thresholds={"small": 0.8}), feed)
    answer = Answer(task=task, model="m", output="x", confidence=0.5)
    (out,) = await verifier.process([inbound(answer)])
    escalated = Task.from_wire(out.value)  # the own policy decided: 0.5 < 0.8 escalates
    assert out.topic == "unit.escalate.large" and not escalated.canary
    assert [(d.stage, d.action, d.tier) for d in escalated.shadow] == [
        ("route", "start", "small"),
        ("verify", "accept", "small"),  # what the shadow would have done with the same answer
    ]


async def test_a_canary_decides_its_share_and_its_results_say_so() -> None:
    from topics.rollout import Rollout

    feed = _pushed("canary", 0.5)
    assert feed.current is not None and isinstance(feed.current.rollout, Rollout)
    requests = [_request(f"c{i}") for i in range(40)]
    routed = [Task.from_wire(o.value) for o in await Router(_ctx(), CheapestFirst(), feed).process(
        [inbound(r) for r in requests])]  # fmt: skip
    canaries = {t.request.id for t in routed if t.canary}
    assert canaries == {r.id for r in requests if feed.current.rollout.decides(r.id)} and 0 < len(canaries) < 40
    verifier = Verifier(_ctx(), ConfidenceThreshold(thresholds={"small": 0.8}), feed)
    outs = await verifier.process([inbound(Answer(task=t, model="m", output="x", confidence=0.5)) for t in routed])
    finished = {Result.from_wire(o.value).request_id for o in outs if o.topic == "unit.results"}
    assert finished == canaries  # only the canary's policy accepts 0.5; the rest escalate
