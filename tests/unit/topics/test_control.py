"""Control-plane messages: the signature covers every field, bounds are part of the schema."""

from __future__ import annotations

import math

import msgspec
import pytest

from topics.control import (
    CommandAction,
    ControlCommand,
    ControllerReport,
    Observed,
    PolicyUpdate,
    Targets,
    decode_control,
)
from topics.errors import DecodeError

KEY = b"k" * 32


def command(**kw: object) -> ControlCommand:
    fields: dict[str, object] = {"key_id": "ops", "seq": 1, "issued_at": 10.0, "expires_at": 70.0}
    return ControlCommand(action=CommandAction.SET_TARGETS, targets=Targets(cost_per_request=0.5), **(fields | kw))  # type: ignore[arg-type]


def test_a_signed_command_survives_the_wire_and_verifies_only_with_its_key() -> None:
    signed = command().signed(KEY)
    decoded = decode_control(signed.to_wire())
    assert decoded == signed and isinstance(decoded, ControlCommand)
    assert decoded.signature_ok(KEY) and not decoded.signature_ok(b"other")


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 2},
        {"expires_at": 1e9},
        {"targets": Targets(cost_per_request=5.0)},
        {"key_id": "root"},
        {"issuer": "someone else"},
    ],
)
def test_changing_any_field_breaks_the_signature(change: dict[str, object]) -> None:
    tampered = msgspec.structs.replace(command().signed(KEY), **change)
    assert not tampered.signature_ok(KEY)


@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf, 1e12])
def test_budgets_out_of_range_fail_at_decode(value: float) -> None:
    raw = msgspec.msgpack.encode(
        {"k": "control_command@1", "a": "set_targets", "kid": "ops", "sq": 1, "ia": 0, "ex": 1, "tg": {"cr": value}}
    )
    with pytest.raises(DecodeError) as caught:
        decode_control(raw)
    assert caught.value.reason == "out_of_range"


def test_every_control_kind_decodes_to_its_own_type() -> None:
    update = PolicyUpdate(version=3, thresholds={"a": 0.5}, allowed_tiers=("a", "b"), reason="r", issued_at=1.0)
    report = ControllerReport(targets=Targets(), observed=Observed(), version=3, lam=0.1, mu=0.0, at=2.0)
    assert decode_control(update.to_wire()) == update
    assert decode_control(report.to_wire()) == report
    with pytest.raises(DecodeError) as caught:
        decode_control(msgspec.msgpack.encode({"k": "request@1", "id": "x"}))
    assert caught.value.reason == "wrong_kind"
    with pytest.raises(DecodeError) as caught:
        decode_control(PolicyUpdate(1, {"a": 1.5}, (), "", 0.0).to_wire())  # encodes fine, never decodes
    assert caught.value.reason == "out_of_range"
