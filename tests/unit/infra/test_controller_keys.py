"""The controller's signing key: from the config and the environment, or ephemeral; to the specs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from infra.config import parse_config
from infra.pipeline import Pipeline, controller_key
from topics.control import ControllerKey
from topics.errors import ConfigError
from workers.controller_actor import controller_trust
from workers.policy_feed import trusted_keys
from workers.spec import ControlConfig

KEY = ControllerKey.generate("ctl-2024")
OTHER = ControllerKey.generate("ctl-2023")


def _config(**control: Any) -> Any:
    return parse_config({"namespace": "n", "tiers": [{"name": "a", "backend": "simulated"}], "control": control})


def test_the_config_names_the_variable_and_lists_public_keys() -> None:
    config = _config(signing_key_env="CTL_KEY", public_keys={"ctl-2024": f" {KEY.public_key.hex()} "})
    assert config.control.signing_key_env == "CTL_KEY"
    assert config.control.public_keys == {"ctl-2024": KEY.public_key.hex()}
    assert _config().control.public_keys == {} and _config().control.signing_key_env == ""


@pytest.mark.parametrize(
    ("control", "message"),
    [
        ({"public_keys": {"k": "abc"}}, "control.public_keys.k must be 64 hex characters"),
        ({"public_keys": {"k": 7}}, "control.public_keys.k must be a string"),
        ({"public_keys": {"no spaces": KEY.public_key.hex()}}, "control.public_keys.no spaces"),
        ({"public_keys": "abc"}, "control.public_keys must be a table"),
        ({"signing_key_env": 1}, "control.signing_key_env must be str"),
        ({"signing_key": "deadbeef"}, "unknown key 'control.signing_key'"),
    ],
)
def test_bad_key_settings_fail_in_one_line(control: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**control)


def test_the_private_key_comes_from_the_named_variable_and_takes_the_id_of_its_public_key() -> None:
    control = ControlConfig(
        signing_key_env="CTL_KEY",
        public_keys={"ctl-2023": OTHER.public_key.hex(), "ctl-2024": KEY.public_key.hex().upper()},
    )
    key, public_keys, ephemeral = controller_key(control, {"CTL_KEY": KEY.seed.hex() + "\n"})
    assert (key, ephemeral) == (KEY, False)
    assert public_keys == dict(control.public_keys)  # both stay trusted: the rotation's old key too
    with pytest.raises(ConfigError, match=f'add <id> = "{KEY.public_key.hex()}"'):
        controller_key(ControlConfig(signing_key_env="CTL_KEY"), {"CTL_KEY": KEY.seed.hex()})
    with pytest.raises(ConfigError, match=r"private key in \$CTL_KEY must be 64 hex characters"):
        controller_key(control, {"CTL_KEY": "-----BEGIN PRIVATE KEY-----"})


@pytest.mark.parametrize("environ", [{}, {"CTL_KEY": ""}, {"CTL_KEY": "  "}])
def test_without_a_private_key_an_ephemeral_pair_is_made(environ: dict[str, str]) -> None:
    control = ControlConfig(signing_key_env="CTL_KEY", public_keys={"ctl-2023": OTHER.public_key.hex()})
    key, public_keys, ephemeral = controller_key(control, environ)
    assert ephemeral and key.key_id.startswith("ephemeral-")
    assert public_keys == {"ctl-2023": OTHER.public_key.hex(), key.key_id: key.public_key.hex()}
    assert controller_key(ControlConfig(), {})[0] != key  # one per deployment


def test_the_deployer_puts_the_public_key_into_every_spec_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline(_config(), "127.0.0.1:9")
    with caplog.at_level(logging.WARNING, logger="tierflow.pipeline"):
        key = pipeline._signing_key()
        assert pipeline._signing_key() is key  # made once: a restarted controller signs with the same key
    (line,) = [r.getMessage() for r in caplog.records]
    assert "ephemeral key" in line and key.public_key.hex() in line
    spec = pipeline.config.runtime("127.0.0.1:9")
    assert spec.control.public_keys == {key.key_id: key.public_key.hex()}
    assert trusted_keys(spec).keys == {key.key_id: key.public_key}
    assert controller_trust(spec, key).keys == {key.key_id: key.public_key}


def test_the_controller_trusts_the_configured_keys_and_its_own_and_refuses_a_mismatch() -> None:
    spec = _config(public_keys={"ctl-2023": OTHER.public_key.hex()}).runtime("127.0.0.1:9")
    assert controller_trust(spec, KEY).keys == {"ctl-2023": OTHER.public_key, "ctl-2024": KEY.public_key}
    impostor = ControllerKey("ctl-2023", KEY.seed)
    with pytest.raises(ConfigError, match=r"control\.public_keys\.ctl-2023 is not the public key"):
        controller_trust(spec, impostor)
