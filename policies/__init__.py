"""Routing and escalation policies: pure decision code, registered by name."""

from policies.base import PostHocPolicy, PreCallPolicy, Route, TierInfo, Verdict, VerdictAction
from policies.defaults import CheapestFirst, ConfidenceThreshold
from policies.registry import make_post_hoc, make_pre_call

__all__ = [
    "CheapestFirst",
    "ConfidenceThreshold",
    "PostHocPolicy",
    "PreCallPolicy",
    "Route",
    "TierInfo",
    "Verdict",
    "VerdictAction",
    "make_post_hoc",
    "make_pre_call",
]
