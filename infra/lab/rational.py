"""Rational Tuning (Zellinger & Thomson, arXiv 2501.09345): thresholds of all tiers chosen jointly.

1. Calibrate each tier's confidence with logistic regression (Platt): p_k = P(tier k
   is right | its confidence).
2. Model the joint distribution of the tiers' calibrated confidences with a
   Gaussian copula: map each tier's p_k to a normal score through its empirical
   CDF and estimate the correlation matrix of the scores on the train split.
3. For thresholds θ, a request stops at the first tier k with p_k >= θ_k (the last
   tier always answers): E[error](θ) = E[1 - p_stop] and E[cost](θ) = E[Σ_{j<=stop} c_j].
4. Minimise E[error] + λ·E[cost] over all thresholds by coordinate descent over a
   quantile grid; sweep λ for the curve.

One deviation, for generality over any number of tiers: the paper integrates
the copula in closed form; we integrate it numerically over a fixed set of 20,000
quasi-random draws (a Sobol sequence, so the result is deterministic). With the
copula, a small train split still yields smooth, well-behaved expectations —
the method's point (the paper's gain is largest with <= 30 examples).

The fitted policy is the ``gatekeeper`` rule with per-tier thresholds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.stats import qmc

from infra.lab.fitters import Method, Pair, answers_of, fit_calibrator_platt, signal_matrix
from infra.lab.table import TraceTable
from policies.cascades import Gatekeeper
from policies.defaults import CheapestFirst
from policies.scoring import Calibrator

FloatArray = npt.NDArray[np.float64]
DRAWS = 1 << 14
"""Sobol draws from the copula (a power of two keeps the sequence balanced)."""


def copula_draws(p: FloatArray, draws: int = DRAWS, seed: int = 0) -> FloatArray:
    """Draws of the tiers' calibrated confidences from a Gaussian copula fitted to the columns of ``p``."""
    n, k = p.shape
    ranks = (stats.rankdata(p, axis=0) - 0.5) / n
    scores = stats.norm.ppf(ranks)
    corr = np.corrcoef(scores, rowvar=False) if k > 1 else np.ones((1, 1))
    corr = np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(corr, 1.0)
    eigen, vectors = np.linalg.eigh(corr)  # repair to positive definite if the estimate is not
    corr = vectors @ np.diag(np.clip(eigen, 1e-6, None)) @ vectors.T
    uniform = qmc.Sobol(d=k, scramble=True, seed=seed).random(draws)
    normal = stats.norm.ppf(np.clip(uniform, 1e-9, 1 - 1e-9)) @ np.linalg.cholesky(corr).T
    u = stats.norm.cdf(normal)
    return np.column_stack([np.quantile(p[:, j], u[:, j]) for j in range(k)])


def expected_error_and_cost(samples: FloatArray, costs: FloatArray, thresholds: FloatArray) -> tuple[float, float]:
    """E[1 - p at the stopping tier] and E[cost up to it] for per-tier thresholds (last tier always answers)."""
    n, k = samples.shape
    open_ = np.ones(n, dtype=bool)
    error = np.zeros(n)
    spent = np.zeros(n)
    for t in range(k):
        spent[open_] += costs[t]
        stop = open_ if t == k - 1 else open_ & (samples[:, t] >= thresholds[t])
        error[stop] = 1.0 - samples[stop, t]
        open_ &= ~stop
    return float(error.mean()), float(spent.mean())


def tune(samples: FloatArray, costs: FloatArray, lam: float, grids: list[FloatArray], passes: int = 4) -> FloatArray:
    """Thresholds minimising E[error] + λ·E[cost], by coordinate descent from 'accept everything'."""
    k = samples.shape[1]
    theta = np.zeros(k)
    for _ in range(passes):
        changed = False
        for t in range(k - 1):
            best_value, best_theta = None, theta[t]
            for candidate in grids[t]:
                trial = theta.copy()
                trial[t] = candidate
                error, cost = expected_error_and_cost(samples, costs, trial)
                value = error + lam * cost
                if best_value is None or value < best_value - 1e-12:
                    best_value, best_theta = value, candidate
            changed |= best_theta != theta[t]
            theta[t] = best_theta
        if not changed:
            break
    return theta


class RationalTuning(Method):
    name = "rational_tuning"

    def prepare(self, train: TraceTable) -> None:
        answers = answers_of(train)
        self._tiers = train.tiers
        self._calibrators: dict[str, Calibrator] = {}
        calibrated = np.zeros((len(train), len(train.tiers)))
        for t, tier in enumerate(train.tiers):
            values = signal_matrix(answers, t, ["confidence"])[:, 0]
            calibrator = fit_calibrator_platt(values, train.correct[:, t])
            self._calibrators[tier] = calibrator
            calibrated[:, t] = [calibrator(v) for v in values]
        self._samples = copula_draws(calibrated)
        self._costs = train.cost.mean(axis=0)
        levels = np.linspace(0, 1, 25)
        self._grids = [np.unique([*np.quantile(column, levels), 1.0 + 1e-9]) for column in self._samples.T]
        scale = float(self._costs.max())
        self._lambdas = [float(x) / scale for x in np.geomspace(1e-3, 10.0, 18)]
        self._fitted: dict[float, FloatArray] = {}

    def settings(self) -> list[float]:
        return self._lambdas

    def thresholds(self, lam: float) -> FloatArray:
        if lam not in self._fitted:
            self._fitted[lam] = tune(self._samples, self._costs, lam, self._grids)
        return self._fitted[lam]

    def policies(self, setting: float) -> Pair:
        theta = self.thresholds(setting)
        per_tier = {tier: float(theta[t]) for t, tier in enumerate(self._tiers[:-1])}
        return CheapestFirst(), Gatekeeper(calibrators=self._calibrators, tau=0.0, thresholds=per_tier)
