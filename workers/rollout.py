"""The policies of a pushed policy file, built once per file text by each replica that runs them.

A PolicyUpdate names its pushed policies (``topics/rollout.py``); the text rides only in the
first update that carries a digest, so the feed keeps every text it read (:class:`PolicyTexts`)
and later updates are resolved by digest. Routers and verifiers read the policies on every
batch: the few files a deployment cycles through (the live one, a canary, the one rolled
back to) stay built instead of being parsed again per batch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from policies.base import PostHocPolicy, PreCallPolicy
from policies.file import parse_policy
from topics.control import PolicyUpdate
from topics.rollout import Rollout, RolloutMode


@functools.lru_cache(maxsize=4)
def _built(text: str) -> tuple[PreCallPolicy, PostHocPolicy]:
    return parse_policy(json.loads(text), "pushed policy").build()


@dataclass
class PolicyTexts:
    """Pushed policy texts by digest, from every correctly signed update read (stale ones too: an
    old update may be the one that carried the text a later version names)."""

    texts: dict[str, str] = field(default_factory=dict)

    def remember(self, update: PolicyUpdate) -> None:
        for rollout in (update.live_policy, update.rollout):
            if rollout is not None and rollout.policy:
                self.texts[rollout.digest] = rollout.policy

    def policies(self, rollout: Rollout) -> tuple[PreCallPolicy, PostHocPolicy]:
        """The (pre-call, post-hoc) pair of ``rollout``'s file; the controller checked it before publishing."""
        return _built(rollout.policy or self.texts[rollout.digest])


def shadowed(rollout: Rollout | None) -> bool:
    return rollout is not None and rollout.mode is RolloutMode.SHADOW
