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

from topics.errors import ConfigError
from topics.messages import Answer


def answer_signal(answer: Answer, name: str) -> float:
    """One number read off an answer: ``confidence``, ``neg_entropy``, ``query_chars`` or a feature (0 if absent)."""
    if name == "confidence":
        return answer.confidence
    if name == "neg_entropy":
        return -answer.features.get("entropy", 0.0)
    if name == "query_chars":
        return math.log1p(len(answer.task.request.input))
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
