"""Deferral rules of the speculative cascade: per token, keep the drafter's token or defer to the target.

Pure functions of two next-token distributions (the decoder that calls them is
``workers/backends/speculative_decoding.py``).

Deferral rules (pure functions of the drafter's distribution ``q`` and the
target's ``p`` at one position). ``alpha`` is the *cost of deferring*, as in the
paper, so for every rule a larger ``alpha`` means fewer deferrals; ``alpha`` in
``[0, 1]`` spans the whole range for all three:

* ``chow``: defer when ``max q < 1 - alpha`` (Chow's rule: the drafter's own
  confidence only; ``alpha = 0`` defers whenever the drafter is not certain,
  ``alpha >= 1`` never defers).
* ``diff``: defer when ``max q < max p - alpha`` (the target's confidence must beat
  the drafter's by a margin).
* ``opt``: defer when ``max q < max p - alpha * D_TV(p, q)``, the paper's plug-in
  approximation of the optimal speculative-cascade deferral rule, with
  ``D_TV(p, q) = 0.5 * sum |p - q|``. Because ``max p - max q <= p(v*) - q(v*) <=
  D_TV`` (``v*`` the target's argmax), ``alpha >= 1`` never defers; ``alpha = 0``
  defers whenever the target is more confident than the drafter. The form is the
  one we recall from the paper (its Diff rule with the margin scaled by the
  distributions' distance); the full text was not at hand to re-check it.

With greedy decoding (the decoder's only mode) the kept token is ``argmax q`` and
the deferred one ``argmax p``; the decoder's docstring says what that implies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

Rule = Literal["chow", "diff", "opt"]
RULES: tuple[Rule, ...] = get_args(Rule)

Probs = npt.NDArray[np.float64]


def check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha >= 0.0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")


def total_variation(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """``D_TV(p, q) = 0.5 * sum_v |p(v) - q(v)|``, in [0, 1] for two distributions over one vocabulary."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"distributions over different vocabularies: {a.shape} vs {b.shape}")
    return 0.5 * float(np.abs(a - b).sum())


def chow_defers(q: npt.ArrayLike, alpha: float) -> bool:
    """Chow's rule: defer when the drafter's top probability is below ``1 - alpha``."""
    check_alpha(alpha)
    return float(np.max(q)) < 1.0 - alpha


def diff_defers(q: npt.ArrayLike, p: npt.ArrayLike, alpha: float) -> bool:
    """Diff rule: defer when the target's top probability beats the drafter's by more than ``alpha``."""
    check_alpha(alpha)
    return float(np.max(q)) < float(np.max(p)) - alpha


def opt_defers(q: npt.ArrayLike, p: npt.ArrayLike, alpha: float) -> bool:
    """The optimal rule's plug-in form: defer when ``max q < max p - alpha * D_TV(p, q)``.

    The margin the target must win by grows with how much the two models disagree:
    where they agree (small D_TV) deferring changes little, so any confidence gain
    is worth it; where they disagree, the deferral cost ``alpha`` weighs in full.
    """
    check_alpha(alpha)
    return float(np.max(q)) < float(np.max(p)) - alpha * total_variation(p, q)


def defers(rule: Rule, q: npt.ArrayLike, p: npt.ArrayLike, alpha: float) -> bool:
    """Whether ``rule`` at cost ``alpha`` hands this position to the target."""
    if rule == "chow":
        return chow_defers(q, alpha)
    if rule == "diff":
        return diff_defers(q, p, alpha)
    if rule == "opt":
        return opt_defers(q, p, alpha)
    raise ValueError(f"unknown deferral rule {rule!r}; known: {', '.join(RULES)}")


def softmax(logits: npt.ArrayLike) -> Probs:
    """Numerically stable softmax of one row of logits, in float64."""
    row = np.asarray(logits, dtype=np.float64)
    weights = np.exp(row - row.max())
    result: Probs = weights / weights.sum()
    return result


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
