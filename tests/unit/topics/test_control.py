"""Control-plane messages: the signature covers every field, bounds are part of the schema."""

from __future__ import annotations

import math

import msgspec
import pytest

from topics.control import (
    CommandAction,
    ControlCommand,
    ControllerKey,
    ControllerRecord,
    ControllerReport,
    ControlReply,
    Observed,
    PolicyUpdate,
    Targets,
    TrustedKeys,
    decode_control,
    parse_key_hex,
    signed_bytes,
    verify_record,
)
from topics.errors import ConfigError, DecodeError

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


# --- the controller's Ed25519 signatures ----------------------------------------------------------

SIGNER = ControllerKey.generate("ctl-2024")
TRUST = TrustedKeys("prod", {"ctl-2024": SIGNER.public_key})
UPDATE = PolicyUpdate(version=4, thresholds={"a": 0.6}, allowed_tiers=("a", "b"), reason="law", issued_at=5.0)
REPLY = ControlReply(offset=3, accepted=True, reason="tier b paused", key_id="ops", seq=9, at=6.0)
REPORT = ControllerReport(
    targets=Targets(cost_per_request=0.1), observed=Observed(), version=4, lam=0.2, mu=0.0, at=7.0
)


@pytest.mark.parametrize("record", [UPDATE, REPLY, REPORT], ids=["update", "reply", "report"])
def test_a_signed_record_survives_the_wire_and_verifies(record: ControllerRecord) -> None:
    signed = SIGNER.sign(record, "prod")
    assert signed.signer == "ctl-2024" and len(signed.sig) == 128
    decoded = decode_control(signed.to_wire())
    assert decoded == signed
    assert isinstance(decoded, PolicyUpdate | ControlReply | ControllerReport)
    assert verify_record(decoded, TRUST) is None


@pytest.mark.parametrize(
    ("record", "change"),
    [
        (UPDATE, {"version": 1000}),
        (UPDATE, {"allowed_tiers": ("b",)}),
        (UPDATE, {"thresholds": {"a": 0.0}}),
        (UPDATE, {"signer": "ctl-2025"}),
        (REPLY, {"accepted": False}),
        (REPLY, {"offset": 4}),
        (REPLY, {"seq": 10}),
        (REPORT, {"paused": ("a", "b")}),
        (REPORT, {"last_seq": {"ops": 0}}),
    ],
)
def test_tampering_with_any_field_breaks_the_signature(record: ControllerRecord, change: dict[str, object]) -> None:
    tampered = msgspec.structs.replace(SIGNER.sign(record, "prod"), **change)
    both = TrustedKeys("prod", {"ctl-2024": SIGNER.public_key, "ctl-2025": SIGNER.public_key})
    assert verify_record(tampered, both) == "bad_signature"


def test_unsigned_wrong_key_unknown_key_and_another_namespace_are_refused() -> None:
    assert verify_record(UPDATE, TRUST) == "unsigned"
    impostor = ControllerKey.generate("ctl-2024")  # the trusted id, another key
    assert verify_record(impostor.sign(UPDATE, "prod"), TRUST) == "bad_signature"
    assert verify_record(ControllerKey.generate("intruder").sign(UPDATE, "prod"), TRUST) == "unknown_key"
    assert verify_record(SIGNER.sign(UPDATE, "staging"), TRUST) == "bad_signature"  # not replayable elsewhere
    assert verify_record(msgspec.structs.replace(SIGNER.sign(UPDATE, "prod"), sig="zz" * 64), TRUST) == "bad_signature"
    assert verify_record(SIGNER.sign(UPDATE, "prod"), TrustedKeys("prod")) == "unknown_key"  # trusts nothing


def test_two_keys_are_trusted_at_once_for_a_rotation() -> None:
    new = ControllerKey.generate("ctl-2025")
    rotating = TrustedKeys.from_hex("prod", {"ctl-2024": SIGNER.public_key.hex(), "ctl-2025": new.public_key.hex()})
    assert verify_record(SIGNER.sign(UPDATE, "prod"), rotating) is None
    assert verify_record(new.sign(UPDATE, "prod"), rotating) is None
    assert verify_record(new.sign(UPDATE, "prod"), TRUST) == "unknown_key"  # before the new key is listed


def test_the_signature_covers_the_canonical_encoding_and_unsigned_records_keep_their_bytes() -> None:
    signed = SIGNER.sign(REPLY, "prod")
    canonical = msgspec.structs.replace(signed, sig="").to_wire()
    assert signed_bytes(signed, "prod").endswith(canonical) and b"prod" in signed_bytes(signed, "prod")
    legacy = msgspec.msgpack.encode({"k": "control_reply@1", "of": 3, "ok": True, "rs": "r"})
    assert ControlReply.from_wire(legacy).sig == ""  # an old record decodes: it is simply unsigned
    assert ControlReply(offset=3, accepted=True, reason="r").to_wire() == legacy  # no new keys when unsigned


def test_keys_are_64_hex_characters_and_the_seed_stays_out_of_repr() -> None:
    key = ControllerKey.from_hex("k", SIGNER.seed.hex().upper() + "\n")
    assert key.public_key == SIGNER.public_key and SIGNER.seed.hex() not in repr(key)
    for bad in ("", "ab" * 31, "zz" * 32, "ab" * 33):
        with pytest.raises(ConfigError, match="64 hex characters"):
            parse_key_hex(bad, "the key")


def test_an_int_where_the_schema_says_float_still_verifies_after_the_wire() -> None:
    """A threshold of 1 from a JSON policy file, ``issued_at=1``: a reader decodes floats and re-encodes them."""
    loose = PolicyUpdate(version=2, thresholds={"a": 1}, allowed_tiers=("a",), reason="", issued_at=1)
    decoded = decode_control(SIGNER.sign(loose, "prod").to_wire())
    assert isinstance(decoded, PolicyUpdate) and verify_record(decoded, TRUST) is None
