"""Fitting the pre-call routers and the hybrids (``policies/routers.py``, ``policies/cascade_routing.py``).

Every router reads the query vector (``infra/lab/features.py``: the embedding the
router actors compute, plus text statistics) and is fitted on the train split only:

* ``routellm_mf`` / ``routellm_clf`` — the matrix-factorisation scorer is fitted
  by L-BFGS (scipy) on Bradley-Terry pairs (items where two tiers disagree on
  correctness); the classifier is one logistic head per tier for "the strong tier
  is right and this one is wrong". The sweep is the share of traffic sent to the
  strong tier; α is the train quantile that sends that share.
* ``hybrid_llm`` — one logistic head per tier below the strong one for
  quality(t) >= quality(strong) - r, quality being the probability a tier put on
  the answer it gave when right (0 when wrong); r is chosen per tier so the labels
  are as balanced as possible, as in the paper. The sweep is τ.
* ``optllm`` — per-tier success heads averaged over a bootstrap ensemble; the
  sweep is λ, which traces the Pareto front of (cost, expected accuracy).
* ``cargo`` — one ridge regressor for every tier's score, pairwise logistic
  tie-breakers trained on the items where the pair disagrees; τ is fitted to the
  train accuracy, the sweep is λ.
* ``select_then_route`` — k-means categories of the train queries (the taxonomy),
  a shortlist per category of the tiers within a tolerance of its best train
  accuracy that no cheaper tier matches (category accuracies shrunk toward the
  overall ones), and a k-of-5 agreement check; the sweep is a grid of tolerance
  (0: only the category's best tier; 1: every tier on the category's
  cost-accuracy front, cheapest first) and k.
* ``cascade_routing`` — ex-ante heads per tier (cross-validated predictions feed
  the post-hoc scorers, which read the answer's signals plus the ex-ante estimate);
  σ is the root-mean-square gap between a tier's post-hoc and ex-ante estimates on
  train (what running it reveals); the sweep is λ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from infra.lab.features import fitted_prefix, query_vectors
from infra.lab.fitters import (
    Method,
    Pair,
    answers_of,
    fit_scorer,
    scorer_signals,
    signal_matrix,
    threshold_grid,
)
from infra.lab.table import TraceTable
from policies.cascade_routing import MAX_TIERS, CascadeRouter, CascadeRouting
from policies.partners import AcceptAnswer, Agreement
from policies.routers import (
    Cargo,
    HybridLLM,
    OptLLM,
    RouteLLM,
    SelectThenRoute,
    share_threshold,
)
from policies.scoring import LinearHeads, MatrixFactorisation, Standardiser
from topics.errors import DataError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
"""Inverse L2 strengths tried (3-fold CV) for the logistic heads: a 391-dimensional vector and a few
hundred train items need strong regularisation."""
BOOTSTRAPS = 8
FIXED_C = 0.03
"""One regularisation where many fits are made (bootstrap, cross-validation folds): CV in each would cost 3x."""
TOLERANCES = (0.0, 0.02, 0.05, 0.1, 0.2, 1.0)
"""How far below a category's best train accuracy a tier may be and still be shortlisted."""
AGREEMENT_N = 5
PRIOR_ITEMS = 30
"""A category's accuracies count as this many items of the overall accuracy (small categories are noisy)."""
SEED = 0


def fit_logistic_heads(
    x: FloatArray,
    labels: Mapping[str, BoolArray],
    mask: Mapping[str, BoolArray] | None = None,
    c: float | None = None,
    standardiser: Standardiser | None = None,
) -> LinearHeads:
    """One L2 logistic regression per head on standardised ``x`` (rows limited by ``mask[head]``);
    ``c`` fixes the regularisation, else 3-fold CV over ``C_GRID`` picks it per head."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    standardiser = standardiser or Standardiser.fit(x)
    z = standardiser(x)
    coef, intercept = [], []
    for head, y in labels.items():
        target = y[mask[head]] if mask is not None else y
        rows = z[mask[head]] if mask is not None else z
        if min(int(target.sum()), int((~target).sum())) < 3:  # (nearly) one class: its rate, as a constant
            rate = min(max(float(target.mean()) if target.size else 0.5, 1e-4), 1 - 1e-4)
            coef.append(np.zeros(z.shape[1]))
            intercept.append(float(np.log(rate / (1 - rate))))
            continue
        model: Any = (
            LogisticRegressionCV(
                Cs=list(C_GRID),
                cv=3,
                max_iter=3000,
                scoring="neg_log_loss",
                l1_ratios=(0.0,),
                use_legacy_attributes=False,
            )
            if c is None
            else LogisticRegression(C=c, max_iter=3000)
        )
        model.fit(rows, target.astype(int))
        coef.append(np.asarray(model.coef_[0], dtype=np.float64))
        intercept.append(float(model.intercept_[0]))
    return LinearHeads(tuple(labels), np.vstack(coef), np.asarray(intercept), standardiser)


def strongest(table: TraceTable) -> int:
    """The tier with the best train accuracy (the cheaper one on ties)."""
    accuracy = table.correct.mean(axis=0)
    cost = table.cost.mean(axis=0)
    return max(range(len(table.tiers)), key=lambda t: (accuracy[t], -cost[t]))


def lambda_grid(costs: FloatArray, n: int = 32) -> list[float]:
    """λ (quality per unit of cost) from 0 to where even the smallest cost gap between two tiers
    outweighs any quality gap: tiers' prices can span orders of magnitude (the sarcasm ladder's
    top tier costs 100x the middle one), and each pair's trade-off lies at its own scale."""
    unique = np.unique(costs)
    gaps = np.diff(unique)
    widest = float(unique[-1] - unique[0]) or float(unique[-1]) or 1.0
    narrowest = float(gaps[gaps > 0].min()) if (gaps > 0).any() else widest
    return [0.0, *map(float, np.geomspace(1e-3 / widest, 4.0 / narrowest, n))]


class _RouterMethod(Method):
    """Shared preparation: the train split's query vectors, correctness and mean costs."""

    family = "pre-call"
    reads_queries = True

    def prepare(self, train: TraceTable) -> None:
        self.table = train
        self.tiers = train.tiers
        self.prefix = fitted_prefix(train)
        self.x = query_vectors(train, self.embedding, prefix=self.prefix)
        self.correct = train.correct
        self.costs = train.cost.mean(axis=0)
        self.cost_of = {t: float(c) for t, c in zip(self.tiers, self.costs, strict=True)}
        self.strong = strongest(train)
        self.fit()

    def fit(self) -> None:
        """Fit the method's models (after the shared preparation)."""


def _fit_mf(x: FloatArray, correct: BoolArray, k: int = 16, l2: float = 1e-3) -> tuple[FloatArray, ...]:
    """W1, v, w2 of s(m, q) = w2 · (v_m ⊙ W1·x) by L-BFGS on the Bradley-Terry log loss of disagreeing pairs."""
    from scipy.optimize import minimize

    d = x.shape[1]
    tiers = correct.shape[1]
    rows: list[int] = []
    winners: list[int] = []
    losers: list[int] = []
    for a in range(tiers):
        for b in range(tiers):
            wins = correct[:, a] & ~correct[:, b]
            rows.extend(np.flatnonzero(wins))
            winners.extend([a] * int(wins.sum()))
            losers.extend([b] * int(wins.sum()))
    if not rows:
        raise DataError("no train item where one tier is right and another wrong: nothing to learn a win rate from")
    idx, win, lose = np.asarray(rows), np.asarray(winners), np.asarray(losers)
    rng = np.random.default_rng(SEED)
    sizes = (k * d, tiers * k, k)
    theta0 = np.concatenate([rng.normal(0, 0.01, k * d), rng.normal(0, 0.1, tiers * k), np.ones(k)])

    def unpack(theta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        w1 = theta[: sizes[0]].reshape(k, d)
        v = theta[sizes[0] : sizes[0] + sizes[1]].reshape(tiers, k)
        return w1, v, theta[sizes[0] + sizes[1] :]

    def loss(theta: FloatArray) -> tuple[float, FloatArray]:
        w1, v, w2 = unpack(theta)
        h = x[idx] @ w1.T  # (pairs, k)
        u = v[win] - v[lose]
        z = (u * h) @ w2  # s(winner) - s(loser)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        g = (p - 1.0) / len(idx)  # d(-log p)/dz, averaged
        value = float(-np.log(np.maximum(p, 1e-12)).mean() + l2 * (theta @ theta))
        d_w2 = (g[:, None] * u * h).sum(axis=0)
        d_u = g[:, None] * (w2 * h)
        d_v = np.zeros_like(v)
        np.add.at(d_v, win, d_u)
        np.add.at(d_v, lose, -d_u)
        d_w1 = (g[:, None] * (w2 * u)).T @ x[idx]
        grad = np.concatenate([d_w1.ravel(), d_v.ravel(), d_w2]) + 2 * l2 * theta
        return value, grad

    result = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 300})
    return unpack(np.asarray(result.x))


class RouteLLMMethod(_RouterMethod):
    """RouteLLM's win-rate router; ``kind`` picks the matrix-factorisation or the classifier model."""

    kind = "mf"
    needs_confidence = False

    def fit(self) -> None:
        s = self.strong
        below = self.tiers[:s]
        if not below:
            raise DataError(f"the cheapest tier ({self.tiers[0]}) is also the most accurate: nothing to route")
        if self.kind == "mf":
            standardiser = Standardiser.fit(self.x)
            w1, v, w2 = _fit_mf(standardiser(self.x), self.correct)
            self.model: dict[str, Any] = {"mf": MatrixFactorisation(self.tiers, w1, v, w2, standardiser)}
        else:
            labels = {t: self.correct[:, s] & ~self.correct[:, i] for i, t in enumerate(below)}
            self.model = {"classifier": fit_logistic_heads(self.x, labels)}
        probe = RouteLLM(
            embedding=self.embedding, query_prefix=self.prefix, tiers=self.tiers, strong=self.tiers[s], **self.model
        )
        self.lowest_win = np.array([probe.share_score(row) for row in self.x])

    def settings(self) -> list[float]:
        return [float(s) for s in np.linspace(0.0, 1.0, 21)]

    def policies(self, setting: float) -> Pair:
        alpha = share_threshold(self.lowest_win, setting)
        router = RouteLLM(tiers=self.tiers, strong=self.tiers[self.strong], alpha=alpha, target_share=setting,
                          embedding=self.embedding, query_prefix=self.prefix, **self.model)  # fmt: skip
        return router, AcceptAnswer()


class RouteLLMMF(RouteLLMMethod):
    name = "routellm_mf"
    kind = "mf"
    needs_confidence = False


class RouteLLMClassifier(RouteLLMMethod):
    name = "routellm_clf"
    kind = "classifier"


class HybridLLMMethod(_RouterMethod):
    name = "hybrid_llm"

    def fit(self) -> None:
        quality = np.where(self.correct, self.table.confidence, 0.0)
        s = self.strong
        labels, self.relaxation = {}, {}
        for t, tier in enumerate(self.tiers[:s]):
            grid = np.linspace(0.0, 1.0, 21)
            balance = [abs(float((quality[:, t] >= quality[:, s] - r).mean()) - 0.5) for r in grid]
            r = float(grid[int(np.argmin(balance))])
            labels[tier] = quality[:, t] >= quality[:, s] - r
            self.relaxation[tier] = r
        if not labels:
            raise DataError("hybrid_llm needs a tier cheaper than the most accurate one")
        self.classifier = fit_logistic_heads(self.x, labels)
        self.grid = threshold_grid(self.classifier.probs(self.x).ravel())

    def settings(self) -> list[float]:
        return self.grid

    def policies(self, setting: float) -> Pair:
        router = HybridLLM(tiers=self.tiers, strong=self.tiers[self.strong], tau=setting, classifier=self.classifier,
                           relaxation=self.relaxation, embedding=self.embedding, query_prefix=self.prefix)  # fmt: skip
        return router, AcceptAnswer()


def bootstrap_heads(x: FloatArray, correct: BoolArray, tiers: tuple[str, ...], n: int = BOOTSTRAPS) -> LinearHeads:
    """Per-tier success heads averaged over ``n`` fits on bootstrap resamples (OptLLM's robust predictor).

    All fits share one standardisation, so averaging coefficients averages the ensemble's logits.
    """
    standardiser = Standardiser.fit(x)
    rng = np.random.default_rng(SEED)
    fits = []
    for _ in range(n):
        rows = rng.integers(0, len(x), len(x))
        fits.append(fit_logistic_heads(x[rows], {t: correct[rows, i] for i, t in enumerate(tiers)}, c=FIXED_C,
                                       standardiser=standardiser))  # fmt: skip
    coef = np.mean([f.coef for f in fits], axis=0)
    return LinearHeads(tiers, coef, np.mean([f.intercept for f in fits], axis=0), standardiser)


class OptLLMMethod(_RouterMethod):
    name = "optllm"
    needs_confidence = False

    def fit(self) -> None:
        self.predictor = bootstrap_heads(self.x, self.correct, self.tiers)
        self.lambdas = lambda_grid(self.costs)

    def settings(self) -> list[float]:
        return self.lambdas

    def policies(self, setting: float) -> Pair:
        router = OptLLM(
            tiers=self.tiers,
            lam=setting,
            predictor=self.predictor,
            costs=self.cost_of,
            embedding=self.embedding,
            query_prefix=self.prefix,
        )
        return router, AcceptAnswer()

    def describe(self) -> dict[str, Any]:
        return {"pareto_front": self.front()}

    def front(self) -> list[dict[str, float]]:
        """The Pareto front on train as the predictor sees it: (λ, mean cost, expected accuracy), one row per point."""
        p = self.predictor.probs(self.x)
        rows = np.arange(len(p))
        points: list[dict[str, float]] = []
        for lam in self.lambdas:
            pick = np.argmax(p - lam * self.costs, axis=1)
            cost, expected = float(self.costs[pick].mean()), float(p[rows, pick].mean())
            if not points or (cost, expected) != (points[-1]["cost"], points[-1]["expected_accuracy"]):
                points.append({"lam": lam, "cost": cost, "expected_accuracy": expected})
        return points


class CargoMethod(_RouterMethod):
    name = "cargo"
    needs_confidence = False
    TAUS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)

    def fit(self) -> None:
        from sklearn.linear_model import RidgeCV

        standardiser = Standardiser.fit(self.x)
        ridge = RidgeCV(alphas=(1.0, 10.0, 100.0, 1000.0)).fit(standardiser(self.x), self.correct.astype(float))
        self.regressor = LinearHeads(self.tiers, np.asarray(ridge.coef_, dtype=np.float64).reshape(len(self.tiers), -1),
                                     np.asarray(ridge.intercept_, dtype=np.float64).ravel(), standardiser)  # fmt: skip
        labels, mask = {}, {}
        for a in range(len(self.tiers)):
            for b in range(a + 1, len(self.tiers)):
                head = f"{self.tiers[a]}|{self.tiers[b]}"
                labels[head] = self.correct[:, b] & ~self.correct[:, a]
                mask[head] = self.correct[:, a] != self.correct[:, b]
        self.pairwise = fit_logistic_heads(self.x, labels, mask)
        self.lambdas = lambda_grid(self.costs)
        self.tau = max(self.TAUS, key=self._train_accuracy)

    def _policy(self, lam: float, tau: float) -> Cargo:
        return Cargo(tiers=self.tiers, lam=lam, tau=tau, regressor=self.regressor, pairwise=self.pairwise,
                     costs=self.cost_of, embedding=self.embedding, query_prefix=self.prefix)  # fmt: skip

    def _train_accuracy(self, tau: float) -> float:
        """Train accuracy of quality-only routing (λ = 0), where the tie-break matters most."""
        from infra.lab.simulate import simulate, summarise

        return summarise(simulate(self.table, self._policy(0.0, tau), AcceptAnswer())).accuracy

    def settings(self) -> list[float]:
        return self.lambdas

    def policies(self, setting: float) -> Pair:
        return self._policy(setting, self.tau), AcceptAnswer()


class SelectThenRouteMethod(_RouterMethod):
    """Categories by k-means; the sweep is the tolerance that admits a tier to a category's shortlist."""

    name = "select_then_route"
    family = "hybrid"

    def fit(self) -> None:
        from sklearn.cluster import KMeans

        self.standardiser = Standardiser.fit(self.x)
        k = int(np.clip(len(self.x) // 100, 2, 8))
        kmeans = KMeans(n_clusters=k, n_init=4, random_state=SEED).fit(self.standardiser(self.x))
        self.centroids = kmeans.cluster_centers_
        overall = self.correct.mean(axis=0)
        rows = []
        for c in range(k):
            members = self.correct[kmeans.labels_ == c]
            # Shrunk toward the overall accuracy: a tier is "proven" on a category by its evidence there.
            rows.append((members.sum(axis=0) + PRIOR_ITEMS * overall) / (len(members) + PRIOR_ITEMS))
        self.accuracy = np.vstack(rows)

    def settings(self) -> list[float]:
        """Indices into the (tolerance, k) grid: both knobs move cost and accuracy."""
        self.grid = [(tolerance, k) for tolerance in TOLERANCES for k in range(1, AGREEMENT_N + 1)]
        return [float(i) for i in range(len(self.grid))]

    def policies(self, setting: float) -> Pair:
        tolerance, k = self.grid[int(setting)]
        shortlists = [self._shortlist(row, tolerance) for row in self.accuracy]
        router = SelectThenRoute(tiers=self.tiers, centroids=self.centroids, standardiser=self.standardiser,
                                 shortlists=shortlists, embedding=self.embedding, query_prefix=self.prefix)  # fmt: skip
        return router, Agreement(k=k, n=AGREEMENT_N)

    def _shortlist(self, accuracy: FloatArray, tolerance: float) -> list[str]:
        """The tiers within ``tolerance`` of the category's best that no cheaper tier matches or beats
        (an expensive tier no better than a cheaper shortlisted one would only add cost)."""
        keep = []
        for i, tier in enumerate(self.tiers):
            cheaper = [j for j in range(len(self.tiers)) if self.costs[j] < self.costs[i]]
            dominated = any(accuracy[j] >= accuracy[i] for j in cheaper)
            if accuracy[i] >= accuracy.max() - tolerance - 1e-12 and not dominated:
                keep.append(tier)
        return keep


class CascadeRoutingMethod(_RouterMethod):
    name = "cascade_routing"
    family = "hybrid"

    def fit(self) -> None:
        from sklearn.model_selection import KFold

        if len(self.tiers) > MAX_TIERS:
            raise DataError(f"cascade routing handles up to {MAX_TIERS} tiers; choose some with --tiers")
        labels = {t: self.correct[:, i] for i, t in enumerate(self.tiers)}
        self.ex_ante = fit_logistic_heads(self.x, labels)
        held_out = np.zeros(self.correct.shape)
        for fit_rows, held_rows in KFold(5, shuffle=True, random_state=SEED).split(self.x):
            fold = fit_logistic_heads(self.x[fit_rows], {t: y[fit_rows] for t, y in labels.items()}, c=FIXED_C)
            held_out[held_rows] = fold.probs(self.x[held_rows])
        answers = answers_of(self.table)
        self.post_hoc, self.sigma = {}, {}
        for t, tier in enumerate(self.tiers):
            names = scorer_signals(self.table, t)
            x = np.column_stack([signal_matrix(answers, t, names), held_out[:, t]])
            scorer = fit_scorer(x, self.correct[:, t], [*names, "ex_ante"])
            self.post_hoc[tier] = scorer
            post = np.array([scorer.p_correct_of(row) for row in x])
            self.sigma[tier] = float(np.sqrt(np.mean((post - held_out[:, t]) ** 2)))
        self.lambdas = lambda_grid(self.costs)

    def settings(self) -> list[float]:
        return self.lambdas

    def policies(self, setting: float) -> Pair:
        router = CascadeRouter(tiers=self.tiers, lam=setting, ex_ante=self.ex_ante, sigma=self.sigma,
                               costs=self.cost_of, embedding=self.embedding, query_prefix=self.prefix)  # fmt: skip
        verifier = CascadeRouting(tiers=self.tiers, lam=setting, post_hoc=self.post_hoc, sigma=self.sigma,
                                  costs=self.cost_of)  # fmt: skip
        return router, verifier
