"""Property-based fuzzing of every decoder: any input gives a message or a typed DecodeError, never a crash."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from topics import Answer, DeadLetter, DecodeError, Request, Result, Task
from topics.messages import LedgerEntry
from topics.wire import SCHEMA_VERSION

DECODERS: list[Any] = [
    Request.from_wire, Task.from_wire, Answer.from_wire, Result.from_wire, DeadLetter.from_wire, LedgerEntry.from_wire
]  # fmt: skip
REASONS = {"not_msgpack", "wrong_type", "missing_field", "out_of_range", "too_large", "bad_schema", "wrong_kind"}

boundary_numbers = st.sampled_from(
    [
        0,
        -1,
        1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0.0,
        -0.0,
        1.0,
        1.0000001,
        -1e-300,
        1e308,
        float("inf"),
        float("-inf"),
        float("nan"),
    ]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    boundary_numbers,
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=6),
    max_leaves=25,
)
keys = st.sampled_from(["k", "id", "in", "ca", "dl", "h", "r", "t", "hp", "hs", "tk", "c", "f", "s", "co", "p", "pl"])
tags = st.sampled_from([f"{kind}@{SCHEMA_VERSION}" for kind in ("request", "task", "answer", "result", "dead_letter")])
near_messages = st.builds(lambda tag, body: {"k": tag, **body}, tags, st.dictionaries(keys, values, max_size=10))


def _decode_all(raw: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(raw)
        except DecodeError as exc:
            assert exc.reason in REASONS, exc.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(raw: bytes) -> None:
    _decode_all(raw)


@settings(max_examples=300, deadline=None)
@given(values)
def test_random_msgpack_structures(value: Any) -> None:
    _decode_all(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(near_messages)
def test_records_that_almost_look_like_messages(value: dict[str, Any]) -> None:
    _decode_all(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True) | boundary_numbers)
def test_a_decoded_answer_always_has_a_finite_confidence_in_the_unit_interval(number: float) -> None:
    task = Task(Request("r", "q", 1.0), "small")
    raw = msgpack.unpackb(Answer(task, "m", "o", 0.5).to_wire())
    raw["c"] = number
    try:
        answer = Answer.from_wire(msgpack.packb(raw))
    except DecodeError as exc:
        assert exc.reason in ("out_of_range", "wrong_type")
    else:
        assert 0.0 <= answer.confidence <= 1.0
