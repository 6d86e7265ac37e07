"""aiokafka options from the broker config: SASL and TLS pass through; secrets come from env."""

from __future__ import annotations

import pytest

from infra.broker import ExternalBroker, kafka_options, make_provider
from infra.config import BrokerConfig
from topics import ConfigError


def test_plaintext_is_just_the_bootstrap() -> None:
    assert kafka_options(BrokerConfig(), "h:9092") == {"bootstrap_servers": "h:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_password_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    config = BrokerConfig(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc", sasl_password_env="KAFKA_PW"
    )
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    options = kafka_options(config, "h:9093")
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "svc",
        "s3cret",
    )
    assert options["ssl_context"] is not None
    monkeypatch.delenv("KAFKA_PW")
    with pytest.raises(ConfigError, match="KAFKA_PW"):
        kafka_options(config, "h:9093")


def test_external_provider_returns_the_configured_servers() -> None:
    provider = make_provider(BrokerConfig(provider="external", bootstrap_servers="k1:9092,k2:9092"))
    assert isinstance(provider, ExternalBroker)
    with provider as bootstrap:
        assert bootstrap == "k1:9092,k2:9092"
