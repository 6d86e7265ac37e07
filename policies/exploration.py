"""Exploration: a small share of requests also runs on the tiers the policy did not choose.

A policy fitted once goes blind to its own mistakes: the stream only ever shows the
answers of the tiers it ran. Exploration buys the rest. The router draws a share ε of
requests; each drawn request runs as usual (its delivered answer is the policy's) and
is also sent, as an *exploration copy*, to every other tier it was allowed. The copies'
answers go to ``<ns>.explored``, never to the verifier: they cannot replace the answer
delivered, and nothing on the path waits for them.

Why every other tier, not one drawn at random: a candidate cascade may need several
tiers the live policy skipped. With all of them observed together with probability ε,
the chance that everything a candidate needs was seen is ε for any candidate, and the
inverse-propensity estimate stays exact (see ``infra/lab/offpolicy.py``). One tier at a
time would be cheaper per draw but leave multi-tier candidates unobservable.

The draw hashes the request id (with a salt), so a request redelivered after a crash
is drawn the same way and its recorded propensities stay true. The controller bounds
the spend (:func:`bounded_share`): the copies may cost at most ``max_cost_share`` of
the cost per request the budget allows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from topics.draws import drawn
from topics.messages import Task

_DRAW_SALT = b"tierflow-explore-v1\x00"


@dataclass(frozen=True, slots=True)
class ExplorationConfig:
    """``[exploration]`` of a deployment."""

    share: float = 0.0
    """ε: the share of requests also sent to every other allowed tier (0: no exploration)."""
    max_cost_share: float = 0.1
    """What the copies may spend, as a share of the budget's cost per request (without a cost
    target the configured share stands)."""
    salt: str = ""
    """Changes which requests are drawn (the same salt draws the same requests)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"exploration share must be within 0..1, got {self.share}")
        if not 0.0 <= self.max_cost_share <= 1.0:
            raise ValueError(f"exploration max_cost_share must be within 0..1, got {self.max_cost_share}")

    @property
    def enabled(self) -> bool:
        return self.share > 0.0


def explores(request_id: str, share: float, salt: str = "") -> bool:
    """Whether the request is drawn for exploration at ``share``: a hash of its id, so a redone
    request is drawn the same way, and the draws are uniform over ids."""
    return drawn(_DRAW_SALT + salt.encode() + b"\x00", request_id, share)


def propensities(start: str, allowed: Sequence[str], share: float) -> dict[str, float]:
    """The probability with which each allowed tier is sent the request at routing: 1 for the start
    tier, ``share`` for every other (escalations later run as their answers decide)."""
    return {tier: 1.0 if tier == start else share for tier in allowed}


def copy_tiers(start: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """The tiers an explored request's copies go to: every allowed tier but the one it starts at."""
    return tuple(tier for tier in allowed if tier != start)


def bounded_share(config: ExplorationConfig, budget_per_request: float | None, spend_per_explored: float) -> float:
    """The share to explore at: the configured one, lowered until the copies' expected spend per
    request (``share * spend_per_explored``) is at most ``max_cost_share`` of the budget.

    ``spend_per_explored`` is what the copies of one explored request cost, as measured; before
    any is measured (0) the configured share stands. This is a direct solve, not a feedback
    loop: the measured cost per draw does not depend on how often the draws happen.
    """
    if budget_per_request is None or spend_per_explored <= 0.0:
        return config.share
    return min(config.share, config.max_cost_share * budget_per_request / spend_per_explored)


@dataclass
class ExplorationSpend:
    """The explored requests and their copies' cost over the controller's window."""

    window_s: float
    explored: deque[float] = field(default_factory=deque)
    """Completion times of explored requests."""
    copies: deque[tuple[float, float]] = field(default_factory=deque)
    """(time, cost) of every copy answered."""
    total_cost: float = 0.0
    """What every copy this controller saw cost, since it started."""
    total_copies: int = 0

    def add_explored(self, at: float) -> None:
        self.explored.append(at)

    def add_copy(self, at: float, cost: float) -> None:
        self.copies.append((at, cost))
        self.total_cost += cost
        self.total_copies += 1

    def trim(self, now: float) -> None:
        cutoff = now - self.window_s
        while self.explored and self.explored[0] < cutoff:
            self.explored.popleft()
        while self.copies and self.copies[0][0] < cutoff:
            self.copies.popleft()

    def per_explored(self) -> float:
        """Mean cost of one explored request's copies over the window (0 before any)."""
        return sum(cost for _, cost in self.copies) / len(self.explored) if self.explored else 0.0

    def per_request(self, requests: int) -> float:
        """The copies' cost over the window spread over all ``requests`` of the window."""
        return sum(cost for _, cost in self.copies) / requests if requests else 0.0


def explore(task: Task, allowed: Sequence[str], share: float, salt: str = "") -> tuple[Task, tuple[Task, ...]]:
    """The routed ``task`` with the propensities it records (flagged ``explored`` when drawn), and
    the exploration copies to send beside it (none when not drawn)."""
    names = task.allowed or tuple(allowed)
    drawn = explores(task.request.id, share, salt)
    routed = msgspec.structs.replace(task, explored=drawn, propensities=propensities(task.tier, names, share))
    if not drawn:
        return routed, ()
    copies = tuple(
        msgspec.structs.replace(routed, tier=tier, explore_copy=True) for tier in copy_tiers(task.tier, names)
    )
    return routed, copies
