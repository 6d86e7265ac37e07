"""Policies by name, so configs and policy files can say which one runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policies.base import PostHocPolicy, PreCallPolicy
from policies.cascades import AutoMix, ChainRouter, FrugalGPT, Gatekeeper, LMCascade
from policies.defaults import CheapestFirst, ConfidenceThreshold
from topics.errors import ConfigError

PRE_CALL: dict[str, Callable[..., PreCallPolicy]] = {"cheapest_first": CheapestFirst, "chain": ChainRouter}
POST_HOC: dict[str, Callable[..., PostHocPolicy]] = {
    "threshold": ConfidenceThreshold,
    "gatekeeper": Gatekeeper,
    "lm_cascade": LMCascade,
    "frugalgpt": FrugalGPT,
    "automix": AutoMix,
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


def make_post_hoc(name: str, params: Mapping[str, Any] | None = None) -> PostHocPolicy:
    policy: PostHocPolicy = _make("post-hoc", POST_HOC, name, params or {})
    return policy
