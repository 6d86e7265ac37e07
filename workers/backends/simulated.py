"""The ``simulated`` backend: a seeded, parametric stand-in for a model tier.

It lets load tests and policy experiments run at rates no real model reaches, with
accuracy, confidence quality, latency and cost set per tier. Every draw comes from a
generator seeded by a stable hash of ``(seed, tier, request_id)``, so a request that
is replayed (a retried hop, a rebalanced partition) gets the same answer, and
different tiers err independently of one another.

Gold labels: the right answer to a simulated query is ``simulated_gold_label`` of its
request id, whatever the text; a tier outputs it when its draw says "correct" and a
different label, chosen uniformly, otherwise. Tests and the demo compute the same
function to score answers.

Confidence (``calibration`` option), with ``a = accuracy * concentration`` and
``b = (1 - accuracy) * concentration``:

* ``calibrated`` (default): think of a latent confidence ``c ~ Beta(a, b)`` and
  correctness ``~ Bernoulli(c)``; then ``P(correct | c) = c`` exactly and
  ``P(correct) = E[c] = accuracy``. We sample it the other way round (Bayes): draw
  correctness with probability ``accuracy``, then ``c ~ Beta(a + 1, b)`` if correct
  and ``c ~ Beta(a, b + 1)`` if not. A lower ``concentration`` (default 2) spreads
  confidences out, which separates right from wrong answers better.
* ``overconfident``: the calibrated ``c`` pushed towards 1 (``sqrt(c)``), like an
  uncalibrated softmax; policies that trust raw confidence escalate too little.
* ``uninformative``: ``c ~ Beta(a, b)`` independent of correctness (AUROC 0.5).

Features mimic a classifier's output distribution: the output label has probability
``c`` and the other ``K - 1`` labels share ``1 - c`` evenly, so ``max_prob = c``,
``margin = c - (1 - c) / (K - 1)`` (negative when ``c < 1/K``: the simulator's ``c``
is its probability of being right, not a true arg-max) and ``entropy`` in nats.

Scripted shifts, for controller drills and benchmarks: a query whose input starts
with ``hard:`` is answered with ``hard_accuracy`` instead of ``accuracy`` (a shift to
harder traffic), and from the epoch time ``slow_from`` on the tier's mean latency is
``slow_latency_ms`` (a tier that slows down).

Latency: each query draws ``latency_ms * LogNormal(-s^2/2, s)`` (mean ``latency_ms``,
``s = latency_jitter``); a batch is one model call, so it sleeps the *maximum* of its
draws and each Completion reports its share (batch time / batch size), as real
backends do. ``latency_ms == 0`` never awaits anything, for throughput benchmarks.

Options: ``accuracy`` (0.7), ``hard_accuracy`` (``accuracy``), ``calibration``,
``concentration`` (2), ``labels`` (``["0", "1"]``), ``seed`` (0), ``cost`` (0.001 per
query), ``latency_ms`` (0), ``latency_jitter`` (0), ``slow_from`` (never),
``slow_latency_ms`` (``latency_ms``), and ``model``: the name reported on answers
(default: the tier's name).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from topics.errors import ConfigError
from workers.backends.base import MODEL_NAME_OPTIONS, Backend, Completion, Query, register_backend

DEFAULT_LABELS: tuple[str, ...] = ("0", "1")
CALIBRATIONS: tuple[str, ...] = ("calibrated", "overconfident", "uninformative")


def _stable_int(*parts: str) -> int:
    """A 128-bit integer from a blake2b hash: stable across processes, unlike ``hash()``."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest, "big")


def simulated_gold_label(request_id: str, labels: Sequence[str] = DEFAULT_LABELS) -> str:
    """The right answer to simulated query ``request_id``: a stable hash of the id over ``labels``.

    Independent of tier and seed, so every tier of a portfolio agrees on what is correct.
    """
    if not labels:
        raise ConfigError("simulated_gold_label needs at least one label")
    return labels[_stable_int("gold", request_id) % len(labels)]


def _number(options: Mapping[str, Any], key: str, default: float, low: float, high: float = math.inf) -> float:
    """Read a numeric option in ``[low, high]``; a bad value raises ConfigError naming the key."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"simulated option {key!r} must be a number, got {value!r}")
    if not low <= value <= high or math.isnan(value):
        raise ConfigError(f"simulated option {key!r} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _labels(options: Mapping[str, Any]) -> tuple[str, ...]:
    """Read ``labels``: at least two distinct strings."""
    value = options.get("labels", DEFAULT_LABELS)
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"simulated option 'labels' must be a list of strings, got {value!r}")
    labels = tuple(value)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"simulated option 'labels' needs at least two distinct labels, got {labels!r}")
    return labels


@register_backend("simulated")
class SimulatedBackend(Backend):
    """A tier whose accuracy, confidence quality, latency and cost are set by its options."""

    OPTIONS = MODEL_NAME_OPTIONS | {
        "accuracy", "hard_accuracy", "calibration", "concentration", "labels", "seed", "cost",
        "latency_ms", "latency_jitter", "slow_from", "slow_latency_ms",
    }  # fmt: skip

    def __init__(self, tier: str, options: Mapping[str, Any]) -> None:
        super().__init__(tier, options)
        self.accuracy = _number(options, "accuracy", 0.7, 0.0, 1.0)
        self.latency_ms = _number(options, "latency_ms", 0.0, 0.0)
        self.latency_jitter = _number(options, "latency_jitter", 0.0, 0.0, 5.0)
        self.hard_accuracy = _number(options, "hard_accuracy", self.accuracy, 0.0, 1.0)
        self.slow_from = _number(options, "slow_from", math.inf, 0.0)
        self.slow_latency_ms = _number(options, "slow_latency_ms", self.latency_ms, 0.0)
        self.cost = _number(options, "cost", 0.001, 0.0)
        self.concentration = _number(options, "concentration", 2.0, 1e-3, 1e6)
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"simulated option 'seed' must be an integer, got {seed!r}")
        self.seed = seed
        self.labels = _labels(options)
        calibration = options.get("calibration", "calibrated")
        if calibration not in CALIBRATIONS:
            raise ConfigError(
                f"simulated option 'calibration' must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}"
            )
        self.calibration = str(calibration)

    def _confidence(self, rng: random.Random, correct: bool, accuracy: float | None = None) -> float:
        """Draw the confidence for one answer under the configured calibration scheme."""
        accuracy = self.accuracy if accuracy is None else accuracy
        if accuracy in (0.0, 1.0):
            return accuracy  # the tier knows it is always right (or wrong): calibrated and certain
        a = accuracy * self.concentration
        b = (1.0 - accuracy) * self.concentration
        if self.calibration == "uninformative":
            return rng.betavariate(a, b)
        c = rng.betavariate(a + 1.0, b) if correct else rng.betavariate(a, b + 1.0)
        return math.sqrt(c) if self.calibration == "overconfident" else c

    def _features(self, query: Query, output: str, c: float) -> dict[str, float]:
        """``max_prob``, ``margin``, ``entropy`` of the implied label distribution, and ``verify_p``.

        ``verify_p`` stands in for AutoMix's self-verification: a second confidence,
        drawn like the first (same calibration scheme) but independently of it.
        """
        k = len(self.labels)
        rest = (1.0 - c) / (k - 1)
        entropy = -sum(p * math.log(p) for p in [c] + [rest] * (k - 1) if p > 0.0)
        rng = random.Random(_stable_int(str(self.seed), self.tier, query.request_id, "verify"))
        verify_p = self._confidence(rng, output == simulated_gold_label(query.request_id, self.labels))
        return {"max_prob": c, "margin": c - rest, "entropy": entropy, "verify_p": verify_p}

    def draw(self, query: Query) -> tuple[str, float, float]:
        """The deterministic ``(output, confidence, latency_ms)`` of one query, without sleeping."""
        # stdlib Random, not numpy: seeding a numpy Generator per query cost ~30 us, 10x the draws themselves
        rng = random.Random(_stable_int(str(self.seed), self.tier, query.request_id))
        gold = simulated_gold_label(query.request_id, self.labels)
        accuracy = self.hard_accuracy if query.input.startswith("hard:") else self.accuracy
        correct = bool(rng.random() < accuracy)
        confidence = self._confidence(rng, correct, accuracy)
        if correct:
            output = gold
        else:
            others = [label for label in self.labels if label != gold]
            output = others[rng.randrange(len(others))]
        latency = self.slow_latency_ms if time.time() >= self.slow_from else self.latency_ms
        if latency > 0.0 and self.latency_jitter > 0.0:
            s = self.latency_jitter
            latency *= rng.lognormvariate(-s * s / 2.0, s)
        return output, confidence, latency

    async def infer(self, batch: Sequence[Query]) -> list[Completion]:
        """Answer the batch, then sleep its slowest draw (one batched model call)."""
        draws = [self.draw(query) for query in batch]
        batch_ms = max((latency for _, _, latency in draws), default=0.0)
        if batch_ms > 0.0:
            await asyncio.sleep(batch_ms / 1000.0)
        share = batch_ms / len(batch) if batch else 0.0
        return [
            Completion(output, c, self._features(query, output, c), cost=self.cost, latency_ms=share)
            for query, (output, c, _) in zip(batch, draws, strict=True)
        ]
