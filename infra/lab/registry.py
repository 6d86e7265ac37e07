"""The policy lab's methods by name: what ``tierflow eval --policy`` and ``fit --policy`` accept."""

from __future__ import annotations

from infra.lab.answer_signal_methods import SelfRefMethod, SemanticEntropyMethod
from infra.lab.automix import AutoMixPOMDP, AutoMixThreshold
from infra.lab.fitters import FrugalGPTMethod, GatekeeperMethod, LMCascadeMethod, Method, Threshold
from infra.lab.rational import RationalTuning
from infra.lab.routing import (
    CargoMethod,
    CascadeRoutingMethod,
    HybridLLMMethod,
    OptLLMMethod,
    RouteLLMClassifier,
    RouteLLMMF,
    SelectThenRouteMethod,
)
from policies.features import DEFAULT_EMBEDDING, check_embedding
from topics.errors import ConfigError

METHODS: dict[str, type[Method]] = {
    m.name: m
    for m in (
        Threshold,
        GatekeeperMethod,
        LMCascadeMethod,
        FrugalGPTMethod,
        RationalTuning,
        AutoMixThreshold,
        AutoMixPOMDP,
        SemanticEntropyMethod,
        SelfRefMethod,
        RouteLLMMF,
        RouteLLMClassifier,
        HybridLLMMethod,
        OptLLMMethod,
        CargoMethod,
        SelectThenRouteMethod,
        CascadeRoutingMethod,
    )
}


def make_method(name: str, embedding: str = DEFAULT_EMBEDDING) -> Method:
    """The method ``name``; a router among them is fitted on the query embedding ``embedding``."""
    if name not in METHODS:
        raise ConfigError(f"unknown policy {name!r}; known: {', '.join(sorted(METHODS))}, all")
    method = METHODS[name]()
    method.embedding = check_embedding(embedding, name)
    return method


def method_names(spec: str) -> list[str]:
    """``all`` or a comma-separated list, each checked."""
    names = sorted(METHODS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("--policy needs at least one name (or 'all')")
    for name in names:
        make_method(name)
    return names
