"""Tier options: every backend declares the names it reads, and any other name is refused.

A typo in a tier's ``options`` table (``n_thread``, ``temprature``) used to be ignored,
so the tier silently ran with the default. These tests pin the one-line refusal, and
check every shipped portfolio against the declared names, which would catch a backend
that declares too few.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from topics.errors import ConfigError
from workers.backends import backend_names, backend_options, check_backend_options, create_backend
from workers.backends.base import Backend, Completion, register_backend
from workers.backends.llm import LLM_OPTIONS, LLMOptions

PORTFOLIOS = Path(__file__).resolve().parents[4] / "infra" / "portfolios"

VALID: dict[str, dict[str, Any]] = {
    "simulated": {"accuracy": 0.8},
    "headlines": {"stage": "hashing"},
    "replay": {"trace": "no-such-trace.jsonl"},
    "recorded": {"model": "mixtral-8x7b"},
    "llamacpp": {"model": "smollm2-135m"},
    "openai": {"model": "m", "base_url": "http://127.0.0.1:8000/v1"},
    "speculative": {"drafter": "smollm2-135m", "target": "smollm2-135m"},
}
"""Per backend, options it builds from: a typo added to them is then the only problem."""

TYPOS: dict[str, str] = {
    "simulated": "acuracy",
    "headlines": "prise",
    "replay": "paced",
    "recorded": "modle",
    "llamacpp": "n_thread",
    "openai": "temprature",
    "speculative": "gama",
}


def _refusal(kind: str, bad: str) -> str:
    return f"tier 'small' (backend {kind!r}) has no option {bad!r}; known: {', '.join(sorted(backend_options(kind)))}"


def test_every_backend_has_a_typo_case() -> None:
    assert sorted(TYPOS) == sorted(VALID) == backend_names()


@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_the_valid_options_build(kind: str) -> None:
    check_backend_options(kind, "small", VALID[kind])


@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_a_typo_is_refused_in_one_line_naming_tier_backend_option_and_the_known_ones(kind: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_backend(kind, "small", VALID[kind] | {TYPOS[kind]: 1})
    message = str(caught.value)
    assert message == _refusal(kind, TYPOS[kind])
    assert "\n" not in message
    with pytest.raises(ConfigError) as again:
        check_backend_options(kind, "small", VALID[kind] | {TYPOS[kind]: 1})
    assert str(again.value) == message


@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_unknown_names_are_refused_before_the_constructor_runs(kind: str) -> None:
    """Without its required options the constructor would complain about them; the typo comes first."""
    with pytest.raises(ConfigError, match=f"has no option {TYPOS[kind]!r}"):
        create_backend(kind, "small", {TYPOS[kind]: "x"})


def test_several_unknown_names_are_listed_together() -> None:
    with pytest.raises(ConfigError, match=r"has no options 'n_thread', 'temprature'; known: "):
        create_backend("llamacpp", "small", {"model": "m.gguf", "temprature": 0.5, "n_thread": 2})


def test_speculative_refuses_llm_options_it_does_not_read() -> None:
    """Speculative decoding is greedy and has no probes: accepting these would ignore them."""
    for name in ("temperature", "mode", "verify", "samples", "gpu_layers", "model"):
        with pytest.raises(ConfigError, match=f"backend 'speculative'\\) has no option {name!r}"):
            create_backend("speculative", "small", VALID["speculative"] | {name: 1})


def test_llm_options_are_the_llmoptions_fields_plus_model_shared_by_both_llm_backends() -> None:
    assert {f.name for f in dataclasses.fields(LLMOptions)} | {"model"} == LLM_OPTIONS
    assert backend_options("llamacpp") >= LLM_OPTIONS
    assert backend_options("openai") >= LLM_OPTIONS
    shared = {"prompt", "max_tokens", "price_per_cpu_second", "n_ctx", "n_threads"}
    assert shared <= backend_options("speculative") & backend_options("llamacpp")


def test_check_backend_options_refuses_an_unknown_kind_and_runs_the_value_checks() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'simulate' for tier 'small'; known: headlines, "):
        check_backend_options("simulate", "small", {})
    with pytest.raises(ConfigError, match="'accuracy' must be in"):
        check_backend_options("simulated", "small", {"accuracy": 2})
    with pytest.raises(ConfigError, match="'base_url' must be an http"):
        check_backend_options("openai", "small", {"model": "m"})


def test_the_check_loads_nothing() -> None:
    """Files are only opened by ``load()``, so the config check passes on a machine without them."""
    check_backend_options("llamacpp", "small", {"model": "/no/such/model.gguf"})
    check_backend_options("speculative", "small", {"drafter": "/no/a.gguf", "target": "/no/b.gguf"})
    check_backend_options("replay", "small", {"trace": "/no/such/trace.jsonl"})


def test_a_backend_class_without_options_cannot_register() -> None:
    class Unchecked(Backend):
        async def infer(self, batch: Any) -> list[Completion]:
            return []

    with pytest.raises(TypeError, match="must declare OPTIONS"):
        register_backend("unchecked-test")(Unchecked)
    assert "unchecked-test" not in backend_names()


def test_a_registered_backend_sees_only_its_declared_options() -> None:
    class Echo(Backend):
        OPTIONS: ClassVar[frozenset[str]] = frozenset({"reply"})

        async def infer(self, batch: Any) -> list[Completion]:
            return [Completion(str(self.options.get("reply", "")), 1.0) for _ in batch]

    from workers.backends import base

    register_backend("echo-test")(Echo)
    try:
        assert isinstance(create_backend("echo-test", "t", {"reply": "hi"}), Echo)
        refusal = r"^tier 't' \(backend 'echo-test'\) has no option 'replay'; known: reply$"
        with pytest.raises(ConfigError, match=refusal):
            create_backend("echo-test", "t", {"replay": "hi"})
    finally:
        del base._REGISTRY["echo-test"]


def _portfolio_tiers() -> list[tuple[str, str, str, dict[str, Any]]]:
    tiers = []
    for path in sorted(PORTFOLIOS.glob("*.toml")):
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        tiers += [(path.stem, t["name"], t["backend"], dict(t.get("options", {}))) for t in document.get("tiers", [])]
    return tiers


def test_the_portfolios_are_found() -> None:
    assert len({stem for stem, *_ in _portfolio_tiers()}) >= 5


@pytest.mark.parametrize(
    ("backend", "tier", "options"),
    [pytest.param(b, t, o, id=f"{stem}-{t}") for stem, t, b, o in _portfolio_tiers()],
)
def test_every_shipped_portfolio_tier_passes_the_check(backend: str, tier: str, options: dict[str, Any]) -> None:
    check_backend_options(backend, tier, options)
