"""What the budget CLI checks before anything reaches the broker."""

from __future__ import annotations

import pytest

from infra.config import parse_config
from infra.control_client import new_command, signing_key, targets_from_args
from topics.control import CommandAction
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
