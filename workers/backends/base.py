"""The model backend interface every tier implements.

A backend answers a batch of queries at once (batching amortises model calls) and
returns, per query, the output plus the confidence features the verifier's
post-hoc policy reads. Backends are built from a tier's config by a registry of
factories; weights load in ``load()`` — called once when the worker actor starts,
never at import — so a restarted actor reloads them and unit tests stay cheap.

Each registered backend class declares the option names it reads (``OPTIONS``), and
``create_backend`` refuses any other before the constructor runs: a typo such as
``n_thread`` would otherwise be silently ignored and the tier would run with the
default. Because constructors only validate (nothing loads before ``load()``),
``check_backend_options`` can run every tier's checks when the config is loaded,
before a broker or Ray starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

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


MODEL_NAME_OPTIONS: frozenset[str] = frozenset({"model"})
"""The options ``Backend.model_name`` reads; a backend that keeps that property accepts them."""


class Backend(ABC):
    """A model behind a tier. Subclasses keep ``__init__`` cheap; heavy work goes in ``load``."""

    OPTIONS: ClassVar[frozenset[str]]
    """Every option name the backend (constructor, helpers, inherited ``model_name``) reads.

    Declared by each registered class, checked by ``register_backend``; ``create_backend``
    refuses any other name, so a typo fails the config check instead of being ignored.
    """

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


B = TypeVar("B", bound=Backend)
_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[B]], type[B]]:
    """Class decorator registering a backend class under ``name``.

    The class must declare ``OPTIONS``: without it no option could be checked, so
    leaving it out fails at import rather than accepting every typo.
    """

    def decorate(cls: type[B]) -> type[B]:
        options = getattr(cls, "OPTIONS", None)
        if not isinstance(options, frozenset) or not all(isinstance(o, str) for o in options):
            raise TypeError(f"backend {name!r} ({cls.__qualname__}) must declare OPTIONS: frozenset[str]")
        _REGISTRY[name] = cls
        return cls

    return decorate


def backend_names() -> list[str]:
    """Names of every registered backend (importing the built-in ones first)."""
    import workers.backends  # noqa: F401 - registers the built-in backends

    return sorted(_REGISTRY)


def backend_options(kind: str) -> frozenset[str]:
    """The option names backend ``kind`` accepts (``kind`` must be registered)."""
    backend_names()
    return _REGISTRY[kind].OPTIONS


def _check_kind(kind: str, tier: str) -> type[Backend]:
    known = backend_names()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown backend {kind!r} for tier {tier!r}; known: {', '.join(known)}")
    return _REGISTRY[kind]


def _check_option_names(cls: type[Backend], kind: str, tier: str, options: Mapping[str, Any]) -> None:
    """Refuse option names ``cls`` does not read, in one line naming tier, backend, the bad and the known names."""
    unknown = sorted(str(name) for name in options if name not in cls.OPTIONS)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        what = "option" if len(unknown) == 1 else "options"
        known = ", ".join(sorted(cls.OPTIONS))
        raise ConfigError(f"tier {tier!r} (backend {kind!r}) has no {what} {names}; known: {known}")


def create_backend(kind: str, tier: str, options: Mapping[str, Any]) -> Backend:
    """Build the backend ``kind`` for ``tier``, loading nothing (``load()`` does that).

    An unknown kind lists the known ones; an unknown option name is refused before the
    constructor runs, so the constructor only ever sees names it reads.
    """
    cls = _check_kind(kind, tier)
    _check_option_names(cls, kind, tier, options)
    return cls(tier, options)


def check_backend_options(kind: str, tier: str, options: Mapping[str, Any]) -> None:
    """Raise the one-line ConfigError a tier's ``backend`` and ``options`` would cause, or return.

    For the config loader, at load time: the unknown-kind and unknown-option checks,
    then the backend's own value checks (by building it, which is cheap: constructors
    validate only, nothing is fetched or loaded), so a bad tier is reported before
    any broker or Ray cluster starts. The backend built is discarded.
    """
    create_backend(kind, tier, options)
