"""request_rng: lazily seeded, yet the same sequence as a Random seeded at once."""

from __future__ import annotations

import random

from policies.decisions import LazyRandom, request_rng
from topics import Request


def test_a_lazy_random_draws_what_an_eagerly_seeded_one_draws() -> None:
    lazy, eager = LazyRandom("r-1/2"), random.Random("r-1/2")
    assert [lazy.random() for _ in range(5)] == [eager.random() for _ in range(5)]
    assert lazy.randrange(1000) == eager.randrange(1000)
    assert lazy.gauss(0.0, 1.0) == eager.gauss(0.0, 1.0)
    assert lazy.betavariate(2.0, 3.0) == eager.betavariate(2.0, 3.0)
    assert lazy.choice("abcdefgh") == eager.choice("abcdefgh")


def test_a_request_and_hop_always_draw_the_same() -> None:
    request = Request(id="r-7", input="q", created_at=0.0)
    assert request_rng(request, 1).random() == request_rng(request, 1).random()
    assert request_rng(request, 1).random() != request_rng(request, 2).random()
    assert request_rng(request, 1).getrandbits(64) == random.Random("r-7/1").getrandbits(64)
