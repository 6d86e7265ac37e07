"""The policies of a pushed policy file, built once per file text by each replica that runs them.

A PolicyUpdate carries its rollout's file as text (``topics/rollout.py``); routers and
verifiers read it on every batch, so building the policies again each time would cost a
JSON parse and a registry build per batch. The few files a deployment cycles through
(the live one, a canary, the one rolled back to) stay built.
"""

from __future__ import annotations

import functools
import json

from policies.base import PostHocPolicy, PreCallPolicy
from policies.file import parse_policy
from topics.rollout import Rollout, RolloutMode


@functools.lru_cache(maxsize=4)
def _built(text: str) -> tuple[PreCallPolicy, PostHocPolicy]:
    return parse_policy(json.loads(text), "pushed policy").build()


def rollout_policies(rollout: Rollout) -> tuple[PreCallPolicy, PostHocPolicy]:
    """The (pre-call, post-hoc) pair of ``rollout``'s file; the controller checked it before publishing."""
    return _built(rollout.policy)


def shadowed(rollout: Rollout | None) -> bool:
    return rollout is not None and rollout.mode is RolloutMode.SHADOW
