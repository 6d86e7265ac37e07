"""The client's TLS and SASL settings: a setting that cannot work is one line naming its ``broker.*`` key."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, UnsupportedSaslMechanismError

from topics.connection import KafkaConnection, _sasl_reason, _split_host_port
from topics.errors import BrokerError, ConfigError

PEM = """-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUP5s2V1y7n0zWcM3Vb9i2e2QK5WcwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""


@pytest.fixture
def cafile(tmp_path: Path) -> str:
    """A real CA certificate (self-signed, made here), as ``broker.ssl_cafile`` would name it."""
    from ...tls_material import make_ca

    return str(make_ca(tmp_path).path)


def sasl(**settings: str) -> KafkaConnection:
    defaults = {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc", "sasl_password_env": "KAFKA_PW"}
    return KafkaConnection("h:9093", security_protocol="SASL_SSL", **(defaults | settings))


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        (KafkaConnection("h:1", security_protocol="TLS"), "broker.security_protocol must be one of PLAINTEXT, SSL"),
        (KafkaConnection("h:1", ssl_cafile="/ca.pem"), "broker.ssl_cafile is set but broker.security_protocol"),
        (KafkaConnection("h:1", sasl_username="svc"), "broker.sasl_username is set but broker.security_protocol"),
        (KafkaConnection("h:1", security_protocol="SSL", sasl_mechanism="PLAIN"), "broker.sasl_mechanism is set but"),
        (sasl(sasl_mechanism="GSSAPI"), "broker.sasl_mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        (sasl(sasl_mechanism="scram-sha-512"), "broker.sasl_mechanism must be one of"),
        (sasl(sasl_username=""), "broker.sasl_username is required when broker.security_protocol = 'SASL_SSL'"),
        (sasl(sasl_password_env=""), "broker.sasl_password_env is required"),
    ],
)
def test_settings_that_cannot_work_name_their_key(connection: KafkaConnection, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        connection.check()
    assert "\n" not in str(caught.value)


def test_a_ca_file_that_is_missing_or_not_pem_names_broker_ssl_cafile(tmp_path: Path) -> None:
    missing = KafkaConnection("h:1", security_protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"broker.ssl_cafile: cannot read .*nope.pem: No such file"):
        missing.check()
    text = tmp_path / "key.pem"
    text.write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"broker.ssl_cafile: .*key.pem holds no PEM certificate"):
        KafkaConnection("h:1", security_protocol="SSL", ssl_cafile=str(text)).check()
    garbled = tmp_path / "garbled.pem"
    garbled.write_text(PEM)
    with pytest.raises(ConfigError, match=r"broker.ssl_cafile: .*garbled.pem is not a valid PEM certificate file"):
        KafkaConnection("h:1", security_protocol="SSL", ssl_cafile=str(garbled)).check()


def test_options_check_first_so_no_client_starts_with_a_bad_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broker\.ssl_cafile"):
        KafkaConnection("h:1", security_protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem")).options()


def test_a_good_tls_and_sasl_setting_builds_a_verifying_context(cafile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    connection = sasl(ssl_cafile=cafile)
    connection.check()
    options = connection.options()
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "tierflow-test-ca"),),)]
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "s3cret"


def test_an_empty_mechanism_means_plain() -> None:
    connection = sasl(sasl_mechanism="")
    connection.check()
    assert connection.mechanism == "PLAIN"


def test_sasl_failures_read_as_what_the_broker_did() -> None:
    assert _sasl_reason(KeyError("v"), "SCRAM-SHA-512") == "the broker rejected the credentials"
    assert _sasl_reason(UnsupportedSaslMechanismError("<conn>"), "PLAIN") == "the broker does not offer SASL PLAIN"
    closed = _sasl_reason(KafkaConnectionError("closed"), "PLAIN")
    assert closed == "the broker closed the connection (does it offer PLAIN?)"
    assert _sasl_reason(TimeoutError(), "PLAIN") == "no answer in time"


def test_bootstrap_servers_must_be_host_port() -> None:
    assert _split_host_port("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert _split_host_port("[::1]:9093") == ("::1", 9093)
    with pytest.raises(ConfigError, match=r"broker.bootstrap_servers: 'kafka' is not host:port"):
        _split_host_port("kafka")


def test_a_probe_with_nothing_listening_names_broker_bootstrap_servers(cafile: str) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    connection = KafkaConnection(f"127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=cafile)
    with pytest.raises(
        BrokerError, match=rf"cannot reach the broker at 127.0.0.1:{port} .*\(broker.bootstrap_servers\)"
    ):
        asyncio.run(connection.probe(timeout_s=2.0))
