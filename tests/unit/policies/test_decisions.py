"""request_rng: lazily seeded, yet the same sequence as a Random seeded at once; and every hop's decision."""

from __future__ import annotations

import random

from policies import CheapestFirst, TierInfo, make_post_hoc
from policies.decisions import DEFAULT_MAX_HOPS, LazyRandom, final_result, request_rng, route_request, verify_answer
from topics import Answer, Request, Result, Status
from topics.messages import Decision


def test_a_lazy_random_draws_what_an_eagerly_seeded_one_draws() -> None:
    lazy, eager = LazyRandom("r-1/2"), random.Random("r-1/2")
    assert [lazy.random() for _ in range(5)] == [eager.random() for _ in range(5)]
    assert lazy.randrange(1000) == eager.randrange(1000)
    assert lazy.gauss(0.0, 1.0) == eager.gauss(0.0, 1.0)
    assert lazy.betavariate(2.0, 3.0) == eager.betavariate(2.0, 3.0)
    assert lazy.choice("abcdefgh") == eager.choice("abcdefgh")


def test_a_request_and_hop_always_draw_the_same() -> None:
    request = Request(id="r-7", input="q", created_at=0.0)
    assert request_rng(request, 1).random() == request_rng(request, 1).random()
    assert request_rng(request, 1).random() != request_rng(request, 2).random()
    assert request_rng(request, 1).getrandbits(64) == random.Random("r-7/1").getrandbits(64)


def test_every_hop_says_why_and_the_result_keeps_the_chain() -> None:
    """The router's choice, then each verdict with the confidence it read and the policy's own words."""
    tiers = (TierInfo("small", 0.001), TierInfo("large", 0.1))
    post = make_post_hoc("threshold", {"thresholds": {"small": 0.8, "large": 0.0}})
    routed = route_request(Request("r", "q", 0.0), CheapestFirst(), tiers, version=1)
    assert routed.task.why == (Decision("route", "cheapest_first", "start", "small"),)
    first = verify_answer(Answer(routed.task, "m", "out", 0.4), post, tiers, 0.0, DEFAULT_MAX_HOPS, expired=False)
    assert first.escalation is not None
    step = first.escalation.why[-1]
    assert (step.stage, step.action, step.tier, step.confidence) == ("verify", "escalate", "small", 0.4)
    assert step.policy == post.name and "to large" in step.reason
    last = verify_answer(Answer(first.escalation, "m", "out", 0.9), post, tiers, 1.0, DEFAULT_MAX_HOPS, expired=False)
    assert last.status is Status.OK and last.decision is not None
    result = final_result(first.escalation, Status.OK, None, None, 1.0, decision=last.decision)
    assert [(d.stage, d.action, d.tier) for d in result.why] == [
        ("route", "start", "small"),
        ("verify", "escalate", "small"),
        ("verify", "accept", "large"),
    ]
    assert Result.from_wire(result.to_wire()) == result  # the chain rides on the wire
