"""Fitted pieces the cascade policies evaluate at decision time: calibrators and scorers.

Fitting uses scikit-learn offline (``infra/lab/fitters.py``); what runs in the
verifier is this pure code over the exported numbers, so a policy file is plain
JSON and the stream needs no pickled models.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from topics.errors import ConfigError
from topics.messages import Answer


def answer_signal(answer: Answer, name: str) -> float:
    """One number read off an answer: ``confidence``, ``neg_entropy``, ``query_chars``, ``ex_ante`` (the
    router's estimate for this tier, which cascade routing keeps in the task) or a feature (0 if absent)."""
    if name == "confidence":
        return answer.confidence
    if name == "neg_entropy":
        return -answer.features.get("entropy", 0.0)
    if name == "query_chars":
        return math.log1p(len(answer.task.request.input))
    if name == "ex_ante":
        return answer.task.estimates.get(answer.tier, 0.0)
    return answer.features.get(name, 0.0)


@dataclass(frozen=True, slots=True)
class Calibrator:
    """A monotone map from a raw signal to P(correct): Platt (sigmoid) or isotonic (piecewise linear)."""

    kind: str = "identity"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __call__(self, value: float) -> float:
        if self.kind == "platt":
            return 1.0 / (1.0 + math.exp(-(self.a * value + self.b)))
        if self.kind == "isotonic":
            return float(np.interp(value, self.x, self.y))
        return value

    def to_json(self) -> dict[str, Any]:
        if self.kind == "platt":
            return {"kind": "platt", "a": self.a, "b": self.b}
        if self.kind == "isotonic":
            return {"kind": "isotonic", "x": list(self.x), "y": list(self.y)}
        return {"kind": "identity"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibrator:
        kind = data.get("kind", "identity")
        if kind == "platt":
            return cls("platt", a=float(data["a"]), b=float(data["b"]))
        if kind == "isotonic":
            x, y = tuple(map(float, data["x"])), tuple(map(float, data["y"]))
            if len(x) != len(y) or not x or any(b < a for a, b in itertools.pairwise(x)):
                raise ConfigError("an isotonic calibrator needs equally long, non-empty, sorted x and y")
            return cls("isotonic", x=x, y=y)
        if kind == "identity":
            return cls()
        raise ConfigError(f"unknown calibrator kind {kind!r}; known: identity, isotonic, platt")


@dataclass(frozen=True, slots=True)
class LinearScorer:
    """P(correct) = sigmoid(intercept + coef · standardised signals): an exported logistic regression."""

    signals: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def vector(self, answer: Answer) -> list[float]:
        return [answer_signal(answer, name) for name in self.signals]

    def p_correct(self, answer: Answer) -> float:
        return self.p_correct_of(self.vector(answer))

    def p_correct_of(self, values: Sequence[float]) -> float:
        z = self.intercept + sum(
            c * (v - m) / s for c, v, m, s in zip(self.coef, values, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-500.0, min(500.0, z))))

    def to_json(self) -> dict[str, Any]:
        return {
            "signals": list(self.signals),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinearScorer:
        try:
            scorer = cls(
                tuple(map(str, data["signals"])),
                tuple(map(float, data["coef"])),
                float(data["intercept"]),
                tuple(map(float, data["mean"])),
                tuple(map(float, data["scale"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad scorer: {exc}") from exc
        if not len(scorer.signals) == len(scorer.coef) == len(scorer.mean) == len(scorer.scale):
            raise ConfigError("a scorer needs one coef, mean and scale per signal")
        if any(s <= 0 for s in scorer.scale):
            raise ConfigError("a scorer's scales must be > 0")
        return scorer


def checked_array(data: Any, rows: int | None, cols: int, what: str) -> npt.NDArray[np.float64]:
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be numbers: {exc}") from exc
    shape = (cols,) if rows is None else (rows, cols)
    if array.shape != shape:
        raise ConfigError(f"{what} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{what} must be finite numbers")
    return array


@dataclass(frozen=True)
class Standardiser:
    """(x - mean) / scale over the query vector: the first step of every router model."""

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    def __call__(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale

    @classmethod
    def fit(cls, x: npt.NDArray[np.float64]) -> Standardiser:
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        return cls(x.mean(axis=0), scale)

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Standardiser:
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad standardiser: {exc}") from exc
        scale = checked_array(data.get("scale"), None, mean.size, "standardiser scale")
        if (scale <= 0).any():
            raise ConfigError("a standardiser's scales must be > 0")
        return cls(checked_array(mean, None, mean.size, "standardiser mean"), scale)


@dataclass(frozen=True)
class LinearHeads:
    """One linear model per head over the standardised query vector: ``coef · z + intercept``.

    Logistic heads read ``probs``; regression heads read ``values``. Fitted by
    scikit-learn in the lab and exported as plain numbers.
    """

    heads: tuple[str, ...]
    coef: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    standardiser: Standardiser

    def values(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Raw outputs, one per head (a 1-d vector in, 1-d out; a matrix in, a matrix out)."""
        result: npt.NDArray[np.float64] = self.standardiser(x) @ self.coef.T + self.intercept
        return result

    def probs(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(self.values(x), -500.0, 500.0)))
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "heads": list(self.heads),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            **self.standardiser.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> LinearHeads:
        if isinstance(data, LinearHeads):
            return data
        try:
            heads = tuple(map(str, data["heads"]))
            standardiser = Standardiser.from_json(data)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"bad linear heads: {exc}") from exc
        dim = standardiser.mean.size
        coef = checked_array(data.get("coef"), len(heads), dim, "linear heads coef")
        intercept = checked_array(data.get("intercept"), None, len(heads), "linear heads intercept")
        return cls(heads, coef, intercept, standardiser)


@dataclass(frozen=True)
class MatrixFactorisation:
    """RouteLLM's matrix-factorisation scorer: s(m, q) = w2 · (v_m ⊙ W1·z(q)), one score per tier.

    P(tier a beats tier b on q) = sigmoid(s(a, q) - s(b, q)) (Bradley-Terry).
    """

    tiers: tuple[str, ...]
    w1: npt.NDArray[np.float64]
    """(k, d): projects the standardised query vector into the k-dimensional tier space."""
    v: npt.NDArray[np.float64]
    """(tiers, k): one embedding per tier."""
    w2: npt.NDArray[np.float64]
    standardiser: Standardiser

    def scores(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """One score per tier for a query vector (or a row per query for a matrix)."""
        projected = self.standardiser(x) @ self.w1.T
        result: npt.NDArray[np.float64] = (projected[..., None, :] * self.v) @ self.w2
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "tiers": list(self.tiers),
            "w1": self.w1.tolist(),
            "v": self.v.tolist(),
            "w2": self.w2.tolist(),
            **self.standardiser.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> MatrixFactorisation:
        if isinstance(data, MatrixFactorisation):
            return data
        try:
            tiers = tuple(map(str, data["tiers"]))
            standardiser = Standardiser.from_json(data)
            k = len(data["w2"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"bad matrix factorisation: {exc}") from exc
        dim = standardiser.mean.size
        return cls(
            tiers,
            checked_array(data["w1"], k, dim, "mf w1"),
            checked_array(data["v"], len(tiers), k, "mf v"),
            checked_array(data["w2"], None, k, "mf w2"),
            standardiser,
        )
