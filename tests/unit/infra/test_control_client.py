"""What the budget CLI checks before anything reaches the broker."""

from __future__ import annotations

import pytest

from infra.config import parse_config
from infra.control_client import new_command, reply_verdict, signing_key, targets_from_args, trusted_keys
from topics.control import CommandAction, ControllerKey, ControlReply, PolicyUpdate, TrustedKeys
from topics.errors import ConfigError

CONFIG = parse_config({"namespace": "n", "tiers": [{"name": "a", "backend": "simulated"}]})


def test_the_key_comes_from_the_variable_the_config_names() -> None:
    assert signing_key(CONFIG, None, {"TIERFLOW_CONTROL_KEY": "s3"}) == ("default", b"s3")
    with pytest.raises(ConfigError, match="set the environment variable TIERFLOW_CONTROL_KEY"):
        signing_key(CONFIG, None, {})
    with pytest.raises(ConfigError, match="unknown key id 'ops'"):
        signing_key(CONFIG, "ops", {"TIERFLOW_CONTROL_KEY": "s3"})


@pytest.mark.parametrize(("value", "flag"), [(-1.0, "--cost-per-request"), (float("nan"), "--cost-per-request")])
def test_bad_targets_name_the_flag(value: float, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        targets_from_args(value, None, None, 0.95, None)
    with pytest.raises(ConfigError, match="--quality-floor"):
        targets_from_args(None, None, None, 0.95, 1.5)


def test_commands_get_growing_sequence_numbers_and_a_valid_signature() -> None:
    first = new_command(CommandAction.RELEASE_POLICY, "default", b"k", now=100.0)
    second = new_command(CommandAction.RELEASE_POLICY, "default", b"k", now=100.0)
    assert second.seq > first.seq
    assert first.signature_ok(b"k") and first.expires_at == 400.0


def test_a_latency_target_out_of_range_names_the_real_flag() -> None:
    with pytest.raises(ConfigError, match="--p95-ms") as caught:
        targets_from_args(None, None, -5.0, 0.95, None)
    assert "--latency-ms" not in str(caught.value)


SIGNER = ControllerKey.generate("ctl")
TRUST = TrustedKeys("n", {"ctl": SIGNER.public_key})


def _reply(**kw: object) -> ControlReply:
    fields: dict[str, object] = {"offset": 7, "accepted": True, "reason": "ok", "key_id": "default", "seq": 42}
    return ControlReply(**(fields | kw))  # type: ignore[arg-type]


def test_only_the_controllers_signed_reply_to_this_command_is_taken() -> None:
    """A forged ``accepted`` must never reach the operator as the controller's answer."""
    mine = ("default", 42)
    assert reply_verdict(SIGNER.sign(_reply(), "n"), 7, mine, TRUST) is None
    assert reply_verdict(_reply(), 7, mine, TRUST) == "unsigned"
    assert reply_verdict(ControllerKey.generate("ctl").sign(_reply(), "n"), 7, mine, TRUST) == "bad_signature"
    assert reply_verdict(ControllerKey.generate("x").sign(_reply(), "n"), 7, mine, TRUST) == "unknown_key"
    assert reply_verdict(SIGNER.sign(_reply(), "other-namespace"), 7, mine, TRUST) == "bad_signature"
    assert reply_verdict(SIGNER.sign(_reply(offset=8), "n"), 7, mine, TRUST) == "not_ours"
    assert reply_verdict(SIGNER.sign(_reply(seq=41), "n"), 7, mine, TRUST) == "not_ours"
    assert reply_verdict(SIGNER.sign(_reply(seq=41), "n"), 7, None, TRUST) is None  # raw sends match the offset
    update = PolicyUpdate(version=1, thresholds={}, allowed_tiers=(), reason="", issued_at=0)
    assert reply_verdict(SIGNER.sign(update, "n"), 7, mine, TRUST) == "not_ours"


def test_the_trusted_keys_are_the_configs_public_keys() -> None:
    config = parse_config(
        {
            "namespace": "n",
            "tiers": [{"name": "a", "backend": "simulated"}],
            "control": {"public_keys": {"ctl": SIGNER.public_key.hex()}},
        }
    )
    assert trusted_keys(config) == TRUST
