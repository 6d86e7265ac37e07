"""Hashed draws: a share of ids chosen by a salted hash, the same on every process and every replay.

Exploration (which requests also run on every tier), canaries (which requests a candidate
policy decides) and the lab (which live-complete requests stand in a uniform sample) each
draw this way, each with its own salt so their draws are independent of one another.
"""

from __future__ import annotations

import hashlib


def drawn(salt: bytes, key: str, share: float) -> bool:
    """Whether ``key`` falls in the ``share`` (0..1) of keys that ``salt`` selects: uniform over keys,
    and a key redone (a redelivered request) is drawn the same way."""
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(salt + key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64
