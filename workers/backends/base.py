"""The model backend interface every tier implements.

A backend answers a batch of queries at once (batching amortises model calls) and
returns, per query, the output plus the confidence features the verifier's
post-hoc policy reads. Backends are built from a tier's config by a registry of
factories; weights load in ``load()`` — called once when the worker actor starts,
never at import — so a restarted actor reloads them and unit tests stay cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from topics.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Query:
    """One item of a batch handed to a backend."""

    request_id: str
    """Stable id; seeded backends derive per-request randomness from it."""
    input: str
    """The prompt or text to answer."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A backend's answer to one query."""

    output: str
    """The answer (a class label, a letter, free text)."""
    confidence: float
    """The tier's headline confidence in [0, 1] (e.g. calibrated max probability)."""
    features: Mapping[str, float] = field(default_factory=dict)
    """Further confidence features: ``max_prob``, ``margin``, ``entropy``, ``logprob_q10``…"""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    """Cost of this call in the portfolio's unit (USD by convention)."""
    latency_ms: float = 0.0
    """Time the backend spent on this query (its share of the batch)."""
    error: str | None = None
    """Set when this query failed on its own (the rest of the batch may be fine); no policy accepts it."""


class Backend(ABC):
    """A model behind a tier. Subclasses keep ``__init__`` cheap; heavy work goes in ``load``."""

    def __init__(self, tier: str, options: Mapping[str, Any]) -> None:
        self.tier = tier
        self.options = dict(options)

    @property
    def model_name(self) -> str:
        """The model's name as reported on every Answer."""
        return str(self.options.get("model", self.tier))

    def load(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Load weights or connect; called once per actor start."""

    @abstractmethod
    async def infer(self, batch: Sequence[Query]) -> list[Completion]:
        """Answer every query of ``batch``, in order, one Completion each."""

    async def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release connections; called once when the worker stops."""


def int_option(tier: str, options: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """A tier's integer option in [lo, hi], or a one-line ConfigError naming it."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"tier {tier!r} option {name!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def number_option(tier: str, options: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    """A tier's numeric option in [lo, hi], or a one-line ConfigError naming it."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"tier {tier!r} option {name!r} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


BackendFactory = Callable[[str, Mapping[str, Any]], Backend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class decorator registering a backend factory under ``name``."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return decorate


def backend_names() -> list[str]:
    """Names of every registered backend (importing the built-in ones first)."""
    import workers.backends  # noqa: F401 - registers the built-in backends

    return sorted(_REGISTRY)


def create_backend(kind: str, tier: str, options: Mapping[str, Any]) -> Backend:
    """Build the backend ``kind`` for ``tier``; an unknown kind lists the known ones."""
    known = backend_names()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown backend {kind!r} for tier {tier!r}; known: {', '.join(known)}")
    return _REGISTRY[kind](tier, options)
