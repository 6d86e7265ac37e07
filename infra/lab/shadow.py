"""``tierflow eval --shadow``: a candidate policy file against the live one, on the traffic the stream saw.

Both are run through the stream's decision code over every request of a trace built from
the stream (``tierflow trace --from-kafka``), answering from the rows present
(:func:`~infra.lab.offpolicy.simulate_partial`). The live policy's own path was always
recorded, so its figures are measured, not estimated (every request observed, propensity 1);
the candidate's are off-policy estimates. Both carry bootstrap intervals over requests: how
much the figures owe to this sample of traffic.

Doubly robust here is cross-fitted: the requests are split in two halves by a hash of their
id, and each half's outcome model (the candidate's mean outcome per live path, over that
half's requests that ran on every tier) serves the *other* half, so no request's own outcome
enters its own m̂. Nothing is fitted on the trace: both policies come as files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infra.lab.offpolicy import (
    Estimate,
    Estimator,
    Logged,
    OutcomeModel,
    PolicyEstimate,
    bootstrap_mean,
    check_tiers,
    correct_of,
    cost_of,
    logged_items,
    simulate_partial,
    terms,
    tier_infos,
)
from infra.lab.table import in_train
from policies.file import PolicyFile, load_policy
from topics.errors import DataError
from topics.traces import read_trace


@dataclass(frozen=True)
class ShadowReport:
    trace: str
    estimator: str
    requests: int
    explored: int
    live: tuple[str, PolicyEstimate]
    candidate: tuple[str, PolicyEstimate]

    def as_dict(self) -> dict[str, Any]:
        def policy(name: str, estimate: PolicyEstimate) -> dict[str, Any]:
            return {
                "name": name,
                "accuracy": estimate.accuracy.value,
                "accuracy_ci": estimate.accuracy.interval,
                "cost_per_request": estimate.cost.value,
                "cost_ci": estimate.cost.interval,
                "observed": estimate.observed,
            }

        return {
            "trace": self.trace,
            "estimator": self.estimator,
            "requests": self.requests,
            "explored": self.explored,
            "live": policy(*self.live),
            "candidate": policy(*self.candidate),
        }


MEASURES = (correct_of, cost_of)
"""What is estimated per request, in :class:`PolicyEstimate`'s order: accuracy, then cost."""


def _cross_fitted(items: Sequence[Logged], policy: PolicyFile, tiers: Any) -> list[tuple[float, float]]:
    """m̂ per request from the other half's explored requests (see the module docstring)."""
    pre, post = policy.build()
    halves = [in_train(item.item, 0.5) for item in items]
    complete = [i for i, item in enumerate(items) if len(item.rows) == len(tiers)]
    outcomes = dict(zip(complete, simulate_partial([items[i] for i in complete], pre, post, tiers), strict=True))
    models = {}
    for half in (True, False):
        seen = [o for i in complete if halves[i] is not half and (o := outcomes[i].outcome) is not None]
        paths = [items[i].live_path() for i in complete if halves[i] is not half and outcomes[i].observed]
        if not seen:
            raise DataError("doubly robust needs explored requests in both halves of the trace: use --estimator ips")
        models[half] = OutcomeModel.fit(paths, [correct_of(o) for o in seen], [cost_of(o) for o in seen])
    return [models[half](item) for item, half in zip(items, halves, strict=True)]


def estimate_file(
    items: Sequence[Logged], policy: PolicyFile, tiers: Any, estimator: Estimator, rng: np.random.Generator
) -> PolicyEstimate:
    """One policy file's accuracy and cost per request over ``items``, with intervals."""
    pre, post = policy.build()
    partials = simulate_partial(items, pre, post, tiers)
    fitted = _cross_fitted(items, policy, tiers) if estimator == "dr" else None
    parts: list[Estimate] = []
    for k, measure in enumerate(MEASURES):
        model = None if fitted is None else [f[k] for f in fitted]
        parts.append(bootstrap_mean(terms(partials, measure, estimator, model), rng, estimator))
    return PolicyEstimate(parts[0], parts[1], sum(p.observed for p in partials), len(partials))


def shadow_report(
    trace: str, candidate: str, live: str, estimator: Estimator = "dr", seed: int = 0
) -> ShadowReport:
    """The candidate file against the live one on every request of ``trace``."""
    rows = read_trace(trace)
    files = {"live": load_policy(live), "candidate": load_policy(candidate)}
    tiers = check_tiers(rows, files["candidate"].tiers or files["live"].tiers)
    items = logged_items(rows, tiers)
    if not items:
        raise DataError(f"{trace} has no request with a row of {', '.join(tiers)}")
    infos = tier_infos(items, tiers)
    rng = np.random.default_rng(seed)
    estimates = {name: estimate_file(items, policy, infos, estimator, rng) for name, policy in files.items()}
    explored = sum(any(row.propensity < 1.0 for row in item.rows.values()) for item in items)
    return ShadowReport(
        trace,
        estimator,
        len(items),
        explored,
        (files["live"].name, estimates["live"]),
        (files["candidate"].name, estimates["candidate"]),
    )
