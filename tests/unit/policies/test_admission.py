"""Per-tenant admission: a token bucket, and a budget that counts each request once however often it is retried."""

from __future__ import annotations

import pytest

from policies.admission import BudgetLedger, TokenBucket

COSTS = {"small": 0.001, "medium": 0.01, "large": 0.1}


def test_the_bucket_allows_a_burst_then_the_rate_and_says_when() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=2.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.5)  # the next token in half a second
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(1.0)  # refilled to the burst, not past it


def test_a_call_reserves_its_worst_case_and_settles_every_hop_once() -> None:
    ledger = BudgetLedger(budget=0.5, period_s=60.0)
    assert ledger.admit("r1", None, COSTS, None, now=0.0).allowed is None
    assert ledger.left(0.0) == pytest.approx(0.5 - 0.111)  # small + medium + large, each visited once
    assert ledger.admit("r1", None, COSTS, None, now=1.0).allowed is None  # a retry reserves nothing more
    ledger.settle("r1", 0.011, now=2.0)  # escalated small -> medium: both hops counted
    ledger.settle("r1", 0.011, now=3.0)  # a duplicated result: counted once
    assert ledger.spent == pytest.approx(0.011) and ledger.left(3.0) == pytest.approx(0.489)
    assert ledger.admit("r2", None, COSTS, max_cost=0.005, now=4.0).allowed is None
    assert ledger.reserved["r2"] == 0.005  # the call's own max_cost bounds its worst case


def test_over_budget_narrows_to_the_cheapest_tiers_that_fit_or_refuses() -> None:
    ledger = BudgetLedger(budget=0.05, period_s=60.0)
    admitted = ledger.admit("r1", None, COSTS, None, now=0.0)
    assert admitted.downgraded and admitted.allowed == ("small", "medium")
    ledger.settle("r1", 0.011, now=1.0)
    pinned = ledger.admit("r2", ("large",), COSTS, None, now=2.0)
    assert pinned.refused.startswith("over budget: 0.039 of 0.05 left")  # nothing cheaper was allowed
    strict = BudgetLedger(budget=0.05, period_s=60.0, over_budget="refuse")
    assert strict.admit("r1", None, COSTS, None, now=0.0).refused
    assert strict.admit("r2", ("small",), COSTS, None, now=0.0).allowed == ("small",)


def test_a_new_period_starts_from_nothing_spent() -> None:
    ledger = BudgetLedger(budget=0.2, period_s=60.0)
    ledger.admit("r1", None, COSTS, None, now=10.0)
    ledger.settle("r1", 0.15, now=11.0)
    assert ledger.admit("r2", None, COSTS, None, now=12.0).downgraded
    assert not ledger.admit("r3", None, COSTS, None, now=61.0).downgraded and ledger.spent == 0.0


def test_entries_written_elsewhere_count_once_and_only_in_their_period() -> None:
    here, there = BudgetLedger(budget=0.2, period_s=60.0), BudgetLedger(budget=0.2, period_s=60.0)
    cost = there.admit("r1", None, COSTS, None, now=10.0).reserved
    assert cost is not None and cost == pytest.approx(0.111)
    here.hold("r1", cost, there.period_of(10.0), now=11.0)  # what the ledger topic carried over
    here.hold("r1", cost, 0, now=11.0)  # read twice: held once
    assert here.left(11.0) == pytest.approx(0.2 - 0.111)
    assert here.admit("r2", None, COSTS, None, now=12.0).downgraded  # the other process's reservation counts
    assert here.settle("r1", 0.011, now=13.0, period=0) and not here.settle("r1", 0.011, now=14.0, period=0)
    assert here.spent == pytest.approx(0.011)
    here.hold("old", 0.1, period=-1, now=15.0)  # a past period's reservation: not this one's
    assert not here.settle("old", 0.1, now=15.0, period=5)  # nor a settlement counted in another period
    assert "old" not in here.reserved and here.spent == pytest.approx(0.011)
    assert here.admit("r2", None, COSTS, None, now=16.0).reserved is None  # a retry reserves nothing new
