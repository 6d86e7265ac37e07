"""A pushed policy on the wire: which policy file, in which mode, for which requests.

``tierflow policy push FILE`` sends the file's text in a signed command; the controller
checks it and carries it in every PolicyUpdate from then on (:attr:`PolicyUpdate.live_policy`,
or :attr:`PolicyUpdate.rollout` for a candidate),
so routers and verifiers switch at one version boundary, and ``budget pin VERSION`` rolls
back to whatever that version ran. Three modes:

* ``shadow`` — the candidate decides nothing; routers and verifiers log what it would have
  done (where it would have started, whether it would have accepted) in ``Result.shadow``;
* ``canary`` — it decides the ``share`` of requests whose id hashes below it (router and
  verifier agree without talking, a redone request is drawn the same way), and their
  Results say ``canary``;
* ``live`` — it decides every request.

The policy travels as text, not as a path: every replica gets the same bytes, whatever
machine it runs on, and the digest names the very text that decided a request. The text rides
only in the first update that carries its digest; later ones carry the digest alone
(:meth:`Rollout.by_digest`), and readers keep the texts they saw (every reader replays the
control topic, which is never trimmed, from its beginning).

An update holds up to two: the pushed policy running ``live`` (instead of the config's own),
and a candidate in ``shadow`` or as a ``canary`` beside whichever runs live.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

import msgspec

from topics.draws import drawn
from topics.wire import Confidence, Part

MAX_POLICY_BYTES = 256 * 1024
"""A pushed policy file's largest size: it rides in every policy update until replaced."""

_CANARY_SALT = b"tierflow-canary-v1\x00"


class RolloutMode(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    LIVE = "live"


def policy_digest(text: str) -> str:
    """A short name for a policy file's exact text (16 hex characters of its SHA-256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Rollout(Part, frozen=True, rename={"policy": "p", "digest": "d", "mode": "m", "share": "s", "name": "n"}):
    """A pushed policy file and how far it reaches (see the module docstring)."""

    policy: str
    """The policy file, as JSON text (``policies/file.py``); "" after the update that first carried it."""
    digest: str
    """:func:`policy_digest` of ``policy``."""
    mode: RolloutMode
    share: Confidence = 1.0
    """``canary``: the share of requests it decides."""
    name: str = ""
    """The policy's own name (``frugalgpt``…), for people reading status."""

    def decides(self, request_id: str) -> bool:
        """Whether this policy, not the one running live beside it, decides ``request_id``."""
        if self.mode is RolloutMode.LIVE:
            return True
        if self.mode is RolloutMode.SHADOW:
            return False
        return drawn(_CANARY_SALT, request_id, self.share)

    def by_digest(self) -> Rollout:
        """This rollout without its text, for updates after the one that carried it."""
        return msgspec.structs.replace(self, policy="")

    def describe(self) -> str:
        reach = {"shadow": "in shadow", "live": "live"}.get(self.mode, f"canary on {self.share:.0%} of requests")
        return f"{self.name or 'policy'} {self.digest} {reach}"
