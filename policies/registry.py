"""Policies by name, so configs and policy files can say which one runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policies.answer_signals import SelfRef, SemanticEntropy
from policies.base import PostHocPolicy, PreCallPolicy
from policies.cascade_routing import CascadeRouter, CascadeRouting
from policies.cascades import AutoMix, FrugalGPT, Gatekeeper, LMCascade
from policies.defaults import CheapestFirst, ConfidenceThreshold
from policies.partners import AcceptAnswer, Agreement
from policies.routers import Cargo, ChainRouter, HybridLLM, OptLLM, RouteLLM, SelectThenRoute
from topics.errors import ConfigError

PRE_CALL: dict[str, Callable[..., PreCallPolicy]] = {
    policy.name: policy
    for policy in (CheapestFirst, ChainRouter, RouteLLM, HybridLLM, OptLLM, Cargo, SelectThenRoute, CascadeRouter)
}
POST_HOC: dict[str, Callable[..., PostHocPolicy]] = {
    policy.name: policy
    for policy in (
        ConfidenceThreshold,
        Gatekeeper,
        LMCascade,
        FrugalGPT,
        AutoMix,
        SemanticEntropy,
        SelfRef,
        AcceptAnswer,
        Agreement,
        CascadeRouting,
    )
}


def _make(kind: str, table: Mapping[str, Callable[..., Any]], name: str, params: Mapping[str, Any]) -> Any:
    if name not in table:
        raise ConfigError(f"unknown {kind} policy {name!r}; known: {', '.join(sorted(table))}")
    try:
        return table[name](**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for {kind} policy {name!r}: {exc}") from exc


def make_pre_call(name: str, params: Mapping[str, Any] | None = None) -> PreCallPolicy:
    policy: PreCallPolicy = _make("pre-call", PRE_CALL, name, params or {})
    return policy


LEGACY_POST_HOC_PARAMS = frozenset({"max_hops"})
"""Parameters post-hoc policies no longer take, dropped silently when building one."""


def make_post_hoc(name: str, params: Mapping[str, Any] | None = None) -> PostHocPolicy:
    # Policy files (and configs) written before the hop limit became a deployment limit
    # (``policies.decisions.verify_answer``) carry ``"max_hops": 16`` in their post-hoc
    # params; every policy is built here, so dropping it here keeps those files loading.
    current = {key: value for key, value in (params or {}).items() if key not in LEGACY_POST_HOC_PARAMS}
    policy: PostHocPolicy = _make("post-hoc", POST_HOC, name, current)
    return policy
