"""A label judges a request in exactly one way; anything else is refused with a reason code."""

from __future__ import annotations

import math

import msgspec
import pytest

from topics.errors import DecodeError
from topics.feedback import Feedback


def _wire(**fields: object) -> bytes:
    return msgspec.msgpack.encode({"k": "feedback@1", "id": "r1", "src": "reviewer", "at": 1.0, **fields})


@pytest.mark.parametrize(
    ("fields", "verdict"),
    [({"correct": False}, "correct"), ({"score": 0.25}, "score"), ({"preferred_tier": "large"}, "preferred_tier")],
)
def test_a_label_round_trips_with_its_kind(fields: dict[str, object], verdict: str) -> None:
    label = Feedback(request_id="r1", source="reviewer", at=5.0, **fields)  # type: ignore[arg-type]
    decoded = Feedback.from_wire(label.to_wire())
    assert decoded == label
    assert decoded.verdict == verdict


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "one_label_needed"),
        ({"ok": True, "sc": 0.5}, "one_label_needed"),
        ({"sc": math.nan}, "out_of_range"),
        ({"sc": 1.5}, "out_of_range"),
        ({"sc": math.inf}, "out_of_range"),
        ({"ok": "yes"}, "wrong_type"),
        ({"pt": ""}, "out_of_range"),
        ({"ok": True, "at": -1.0}, "out_of_range"),
    ],
)
def test_a_bad_label_is_refused_with_a_reason(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(DecodeError) as refused:
        Feedback.from_wire(_wire(**fields))
    assert refused.value.reason == reason


def test_a_label_without_an_id_is_refused() -> None:
    raw = msgspec.msgpack.encode({"k": "feedback@1", "src": "x", "at": 1.0, "ok": True})
    with pytest.raises(DecodeError) as refused:
        Feedback.from_wire(raw)
    assert refused.value.reason == "missing_field"


def test_a_request_is_not_a_label() -> None:
    from topics.messages import Request

    with pytest.raises(DecodeError) as refused:
        Feedback.from_wire(Request(id="r1", input="q", created_at=1.0).to_wire())
    assert refused.value.reason == "wrong_kind"
