"""Routing and escalation policies: pure decision code, registered by name."""

from policies.base import Action, PostHocPolicy, PreCallPolicy, Route, TierInfo, Verdict
from policies.defaults import CheapestFirst, ConfidenceThreshold
from policies.registry import make_post_hoc, make_pre_call

__all__ = [
    "Action",
    "CheapestFirst",
    "ConfidenceThreshold",
    "PostHocPolicy",
    "PreCallPolicy",
    "Route",
    "TierInfo",
    "Verdict",
    "make_post_hoc",
    "make_pre_call",
]
