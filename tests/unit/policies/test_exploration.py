"""Exploration: which requests are drawn, what each records, what the copies may spend."""

from __future__ import annotations

import pytest

from policies.exploration import (
    ExplorationConfig,
    ExplorationSpend,
    bounded_share,
    copy_tiers,
    explore,
    explores,
    propensities,
)
from topics.messages import Request, Task

LADDER = ("small", "medium", "large")


def test_the_draw_is_a_hash_of_the_id_so_a_redone_request_is_drawn_the_same_way() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    drawn = [explores(i, 0.05) for i in ids]
    assert drawn == [explores(i, 0.05) for i in ids]
    assert sum(drawn) / len(ids) == pytest.approx(0.05, abs=0.005)  # 5 standard errors is 0.0077
    assert drawn != [explores(i, 0.05, salt="other") for i in ids]  # another salt draws other requests
    assert not any(explores(i, 0.0) for i in ids) and all(explores(i, 1.0) for i in ids)


def test_every_tier_records_the_probability_it_was_sent_and_copies_go_to_all_the_others() -> None:
    assert propensities("medium", LADDER, 0.1) == {"small": 0.1, "medium": 1.0, "large": 0.1}
    assert copy_tiers("medium", LADDER) == ("small", "large")


def test_a_drawn_request_keeps_its_path_and_gains_flagged_copies() -> None:
    task = Task(Request("r", "q", 0.0), "small", allowed=("small", "large"))
    routed, copies = explore(task, LADDER, 1.0)
    assert (routed.tier, routed.explored, routed.explore_copy) == ("small", True, False)
    assert routed.propensities == {"small": 1.0, "large": 1.0}  # the router's allowed set, not the ladder
    assert [(c.tier, c.explored, c.explore_copy, c.hop) for c in copies] == [("large", True, True, 0)]
    quiet, none = explore(task, LADDER, 0.0)
    assert none == () and not quiet.explored and quiet.propensities == {"small": 1.0, "large": 0.0}


def test_the_share_is_lowered_until_the_copies_fit_their_part_of_the_budget() -> None:
    config = ExplorationConfig(share=0.1, max_cost_share=0.2)
    assert bounded_share(config, None, 5.0) == 0.1  # no cost target: the configured share
    assert bounded_share(config, 1.0, 0.0) == 0.1  # nothing measured yet
    assert bounded_share(config, 1.0, 1.0) == 0.1  # 0.1 x 1.0 spends 0.1 <= 0.2
    assert bounded_share(config, 1.0, 4.0) == pytest.approx(0.05)  # 0.05 x 4.0 = 0.2 of a budget of 1.0


@pytest.mark.parametrize(("share", "max_cost_share"), [(-0.1, 0.1), (1.5, 0.1), (0.1, 2.0)])
def test_settings_out_of_range_are_refused(share: float, max_cost_share: float) -> None:
    with pytest.raises(ValueError, match="exploration"):
        ExplorationConfig(share=share, max_cost_share=max_cost_share)


def test_the_spend_window_forgets_what_left_it_and_keeps_the_totals() -> None:
    spend = ExplorationSpend(window_s=10.0)
    spend.add_explored(0.0)
    spend.add_copy(0.5, 2.0)
    spend.add_explored(8.0)
    spend.add_copy(8.5, 4.0)
    assert spend.per_explored() == pytest.approx(3.0) and spend.per_request(100) == pytest.approx(0.06)
    spend.trim(now=15.0)  # the first explored request and its copy are older than 10 s
    assert spend.per_explored() == pytest.approx(4.0)
    assert (spend.total_copies, spend.total_cost) == (2, 6.0)
