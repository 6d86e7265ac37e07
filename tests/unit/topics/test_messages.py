"""Wire round trips and decode-time validation of every message."""

from __future__ import annotations

import math

import msgpack
import pytest

from topics import Answer, DeadLetter, DecodeError, Hints, HistoryEntry, Request, Result, Status, Task
from topics.messages import LedgerEntry
from topics.wire import SCHEMA_VERSION

REQUEST_TAG = f"request@{SCHEMA_VERSION}"

REQUEST = Request(
    id="r-1",
    input="is this sarcastic?",
    created_at=1700000000.5,
    deadline=1700000060.0,
    hints=Hints(allowed_tiers=("small", "large"), max_cost=0.5, priority=2),
    tenant="acme",
)
ENTRY = HistoryEntry("r-1/0/small", "small", "m-small", "yes", 0.42, 0.001, 3.5)
TASK = Task(
    REQUEST, "large", hop=1, history=(ENTRY,), policy_version=7, source_answer="r-1/0/small", allowed=("small", "large")
)
ANSWER = Answer(TASK, "m-large", "no", 0.93, {"max_prob": 0.93, "margin": 0.86}, 12, 1, 0.01, 40.0)


def _patch(raw: bytes, **changes: object) -> bytes:
    obj = msgpack.unpackb(raw, raw=False)
    obj.update(changes)
    return msgpack.packb(obj, use_bin_type=True)


def test_round_trips() -> None:
    assert Request.from_wire(REQUEST.to_wire()) == REQUEST
    assert Task.from_wire(TASK.to_wire()) == TASK
    assert Answer.from_wire(ANSWER.to_wire()) == ANSWER
    result = Result(
        "r-1",
        Status.EXHAUSTED,
        "no",
        "large",
        "m-large",
        0.6,
        0.011,
        55.0,
        ("small", "large"),
        7,
        "no higher tier",
        1700000001.0,
    )
    assert Result.from_wire(result.to_wire()) == result


def test_defaults_round_trip() -> None:
    minimal = Request(id="x", input="", created_at=0.0)
    assert Request.from_wire(minimal.to_wire()) == minimal


def test_answer_id_names_request_hop_and_tier() -> None:
    assert ANSWER.answer_id == "r-1/1/large"
    assert ANSWER.as_history().answer_id == ANSWER.answer_id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xc1\xff not msgpack", "not_msgpack"),
        (msgpack.packb([1, 2, 3]), "wrong_type"),
        (msgpack.packb({"k": REQUEST_TAG, "in": "x", "ca": 1.0}), "missing_field"),
        (msgpack.packb({"k": REQUEST_TAG, "id": 5, "in": "x", "ca": 1.0}), "wrong_type"),
        (msgpack.packb({"k": REQUEST_TAG, "id": "a", "in": "x", "ca": True}), "wrong_type"),
        (msgpack.packb({"k": "request@99", "id": "a", "in": "x", "ca": 1.0}), "bad_schema"),
        (msgpack.packb({"k": "task@1", "r": {}}), "wrong_kind"),
        (msgpack.packb({"id": "a", "in": "x", "ca": 1.0}), "missing_field"),
        (msgpack.packb({"k": REQUEST_TAG, "id": "", "in": "x", "ca": 1.0}), "out_of_range"),
        (msgpack.packb({"k": REQUEST_TAG, "id": "a" * 201, "in": "x", "ca": 1.0}), "out_of_range"),
        (msgpack.packb({"k": REQUEST_TAG, "id": "a", "in": "x", "ca": math.inf}), "out_of_range"),
        (msgpack.packb({"k": REQUEST_TAG, "id": "a", "in": "x", "ca": math.nan}), "out_of_range"),
        (msgpack.packb({"k": REQUEST_TAG, "id": "a", "in": "x", "ca": -1.0}), "out_of_range"),
    ],
)
def test_bad_requests_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        Request.from_wire(raw)
    assert err.value.reason == reason


@pytest.mark.parametrize("confidence", [math.nan, math.inf, -math.inf, -0.01, 1.01])
def test_answer_confidence_must_be_finite_in_unit_interval(confidence: float) -> None:
    with pytest.raises(DecodeError) as err:
        Answer.from_wire(_patch(ANSWER.to_wire(), c=confidence))
    assert err.value.reason == "out_of_range"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_features_are_rejected(value: float) -> None:
    with pytest.raises(DecodeError) as err:
        Answer.from_wire(_patch(ANSWER.to_wire(), f={"max_prob": value}))
    assert err.value.reason == "out_of_range"


def test_the_wire_is_plain_msgpack_with_short_keys() -> None:
    obj = msgpack.unpackb(REQUEST.to_wire())
    assert obj == {
        "k": REQUEST_TAG,
        "id": "r-1",
        "in": "is this sarcastic?",
        "ca": 1700000000.5,
        "dl": 1700000060.0,
        "h": {"at": ["small", "large"], "mc": 0.5, "pr": 2},
        "tn": "acme",
    }
    assert "e" not in msgpack.unpackb(ANSWER.to_wire()), "absent optional fields are not sent"


def test_decoding_refuses_what_is_not_bytes() -> None:
    with pytest.raises(DecodeError) as err:
        Request.from_wire("a string")  # type: ignore[arg-type]
    assert err.value.reason == "wrong_type"


def test_payload_size_limit() -> None:
    big = Request(id="big", input="x" * 5000, created_at=1.0)
    with pytest.raises(DecodeError) as err:
        Request.from_wire(big.to_wire(), max_bytes=1024)
    assert err.value.reason == "too_large"


def test_unknown_status_is_rejected() -> None:
    raw = _patch(Result("r", Status.OK).to_wire(), s="maybe")
    with pytest.raises(DecodeError):
        Result.from_wire(raw)


def test_dead_letter_keeps_where_and_why_but_not_oversized_payloads() -> None:
    letter = DeadLetter.for_record(
        topic="ns.requests",
        partition=2,
        offset=41,
        stage="router",
        key=b"r-9",
        value=b"\x00" * 5000,
        error=DecodeError("too_large", "5000 > 1024"),
        at=3.0,
    )
    decoded = DeadLetter.from_wire(letter.to_wire())
    assert decoded == letter
    assert (decoded.reason, decoded.request_id, decoded.payload_size, decoded.payload_head) == (
        "too_large",
        "r-9",
        5000,
        b"",
    )
    assert len(decoded.payload_sha256) == 64


def test_dead_letter_of_a_bad_record_keeps_a_truncated_payload() -> None:
    letter = DeadLetter.for_record(
        topic="t",
        partition=0,
        offset=0,
        stage="s",
        key=None,
        value=b"junk" * 1000,
        error=DecodeError("not_msgpack", "x"),
        at=0.0,
    )
    assert letter.request_id is None
    assert letter.payload_head == (b"junk" * 1000)[:1024]


def test_a_ledger_entry_keeps_its_result_and_refuses_a_negative_cost() -> None:
    result = Result("idem-1", Status.OK, output="yes", tier="small", total_cost=0.001)
    entry = LedgerEntry("acme", "idem-1", 493_000, 0.001, settled=True, result=result, at=1.5, origin="p1")
    assert LedgerEntry.from_wire(entry.to_wire()) == entry
    claim = LedgerEntry("", "idem-2", 0, 0.0)  # an idempotent call's claim, no tenant
    assert LedgerEntry.from_wire(claim.to_wire()) == claim
    with pytest.raises(DecodeError) as bad:
        LedgerEntry.from_wire(_patch(entry.to_wire(), co=-1.0))
    assert bad.value.reason == "out_of_range"
