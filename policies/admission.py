"""Who may send what, per tenant: a token-bucket rate limit and a cost budget per period. Pure code.

The gateway (``infra/gateway``) asks before it sends a call and tells after its result:

* :class:`TokenBucket` — ``rate_per_s`` tokens a second up to ``burst``; a call takes one, and
  one that finds none is told how long until there is one (HTTP 429 with ``Retry-After``).
* :class:`BudgetLedger` — the tenant's spend in the current period. A call reserves its worst
  case before it is sent (every tier it may reach, each visited once, or its own ``max_cost``
  if lower; the tiers' configured ``cost`` per call) and
  settles the result's ``total_cost`` when it ends, which counts every hop of an escalated
  request once. Reservations and settlements are keyed by request id, so a retried call or a
  duplicated result is counted once. When the worst case does not fit what is left,
  :meth:`BudgetLedger.admit` narrows the call to the cheapest tiers that fit (``downgrade``) or
  refuses it (``refuse``).

Every reservation and settlement is also written to the ledger topic (``infra/gateway/ledger.py``);
:meth:`BudgetLedger.hold` and :meth:`BudgetLedger.settle` take the ones other server processes (or
an earlier run) wrote, so one tenant's budget holds across processes and restarts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float = -1.0
    """-1: full at the first look."""
    at: float = 0.0

    def take(self, now: float) -> float:
        """0 when the call may go now (a token is taken), else the seconds until a token is there."""
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s if self.rate_per_s > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class Admission:
    """What the ledger says of one call: send it (perhaps narrowed to ``allowed``), or refuse it."""

    allowed: tuple[str, ...] | None
    refused: str = ""
    downgraded: bool = False
    reserved: float | None = None
    """What this call newly reserved (``None``: nothing, as for a refusal or a retry already counted)."""


@dataclass
class BudgetLedger:
    """One tenant's spend against ``budget`` per ``period_s`` (periods start at multiples of it)."""

    budget: float
    period_s: float
    over_budget: str = "downgrade"
    """``downgrade`` (to the tiers that fit) or ``refuse``."""
    period: int = -1
    spent: float = 0.0
    reserved: dict[str, float] = field(default_factory=dict)
    settled: set[str] = field(default_factory=set)

    def period_of(self, now: float) -> int:
        return int(now // self.period_s)

    def _roll(self, now: float) -> None:
        period = self.period_of(now)
        if period != self.period:
            self.period, self.spent, self.settled = period, 0.0, set()
            self.reserved = {}

    def left(self, now: float) -> float:
        self._roll(now)
        return self.budget - self.spent - sum(self.reserved.values())

    def admit(
        self,
        request_id: str,
        allowed: Sequence[str] | None,
        costs: Mapping[str, float],
        max_cost: float | None,
        now: float,
    ) -> Admission:
        """Reserve the call's worst case, narrowing or refusing it when that does not fit."""
        self._roll(now)
        if request_id in self.reserved or request_id in self.settled:
            return Admission(tuple(allowed) if allowed is not None else None)  # a retry: counted already
        tiers = sorted(allowed if allowed is not None else costs, key=lambda t: costs[t])
        left = self.left(now)
        worst = sum(costs[t] for t in tiers)  # an escalated request visits each allowed tier at most once
        if max_cost is not None:
            worst = min(worst, max_cost)
        if worst <= left:
            self.reserved[request_id] = worst
            return Admission(tuple(allowed) if allowed is not None else None, reserved=worst)
        fits: list[str] = []
        for tier in tiers:  # the cheapest tiers whose costs, all visited, still fit
            if sum(costs[t] for t in fits) + costs[tier] > left:
                break
            fits.append(tier)
        if self.over_budget == "downgrade" and fits:
            self.reserved[request_id] = sum(costs[t] for t in fits)
            return Admission(tuple(fits), downgraded=True, reserved=self.reserved[request_id])
        return Admission(None, refused=f"over budget: {max(left, 0.0):.4g} of {self.budget:g} left this period")

    def release(self, request_id: str) -> None:
        """The call was never sent (the broker refused it): its reservation goes."""
        self.reserved.pop(request_id, None)

    def hold(self, request_id: str, cost: float, period: int, now: float) -> None:
        """A reservation written elsewhere (another server process, an earlier run): count it too."""
        self._roll(now)
        if period == self.period and request_id not in self.reserved and request_id not in self.settled:
            self.reserved[request_id] = cost

    def settle(self, request_id: str, cost: float, now: float, period: int | None = None) -> bool:
        """The call ended with ``cost`` (every hop of it): replace its reservation, once. ``period``: the
        one a settlement written elsewhere counted in (ignored unless it is the current one). True when
        this settled it (False for a repeat)."""
        self._roll(now)
        if request_id in self.settled or (period is not None and period != self.period):
            return False
        self.reserved.pop(request_id, None)
        self.settled.add(request_id)
        self.spent += cost
        return True
