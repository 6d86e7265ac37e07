"""How a client reaches the broker: bootstrap servers plus TLS and SASL settings.

A plain, picklable value that travels to every replica; :meth:`KafkaConnection.options`
builds the aiokafka options inside the process that uses them (an SSL context does not
pickle, and a password is read from the environment where it is needed, never shipped).

:meth:`KafkaConnection.check` finds a setting that cannot work before any connection
(a CA file that is not there, a mechanism no client here speaks), and
:meth:`KafkaConnection.probe` makes one connection to say, in one line naming the
setting, why the broker refused it: aiokafka itself only logs the reason and raises
"Unable to bootstrap".
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topics.errors import BrokerError, ConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""The mechanisms a username and a password are enough for (aiokafka's GSSAPI and OAUTHBEARER need more)."""


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password_env: str = ""
    """Name of the environment variable holding the SASL password (never the password)."""
    ssl_cafile: str = ""

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def mechanism(self) -> str:
        return self.sasl_mechanism or "PLAIN"

    def check(self) -> None:
        """Raise a one-line :class:`ConfigError` naming the ``broker.*`` key of a setting that cannot work."""
        protocol = self.security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"broker.security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}; got {protocol!r}"
            )
        if self.ssl_cafile and not self.uses_tls:
            raise ConfigError(
                f"broker.ssl_cafile is set but broker.security_protocol = {protocol!r} does not use TLS "
                "(SSL or SASL_SSL does)"
            )
        if self.uses_tls and self.ssl_cafile:
            _check_cafile(self.ssl_cafile)
        sasl_keys = [
            key
            for key, value in (
                ("sasl_mechanism", self.sasl_mechanism),
                ("sasl_username", self.sasl_username),
                ("sasl_password_env", self.sasl_password_env),
            )
            if value
        ]
        if sasl_keys and not self.uses_sasl:
            raise ConfigError(
                f"broker.{sasl_keys[0]} is set but broker.security_protocol = {protocol!r} does not use SASL "
                "(SASL_PLAINTEXT or SASL_SSL does)"
            )
        if not self.uses_sasl:
            return
        if self.mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"broker.sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}; got {self.sasl_mechanism!r}"
            )
        if not self.sasl_username:
            raise ConfigError(f"broker.sasl_username is required when broker.security_protocol = {protocol!r}")
        if not self.sasl_password_env:
            raise ConfigError(
                f"broker.sasl_password_env is required when broker.security_protocol = {protocol!r} "
                "(the name of the environment variable holding the password)"
            )

    def password(self) -> str:
        """The SASL password, read now from the variable ``sasl_password_env`` names."""
        password = os.environ.get(self.sasl_password_env, "") if self.sasl_password_env else ""
        if self.sasl_password_env and not password:
            raise ConfigError(f"broker.sasl_password_env names {self.sasl_password_env!r}, which is not set")
        return password

    def options(self) -> dict[str, Any]:
        """aiokafka client options (bootstrap plus SASL/TLS) for any client of this broker."""
        self.check()
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.uses_tls:
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile or None)
        if self.uses_sasl:
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.password(),
            }
        return options

    async def probe(self, timeout_s: float = 10.0) -> None:
        """Connect once to the first bootstrap server that answers, with TLS and SASL as configured.

        Raises a one-line :class:`BrokerError` that names the setting to look at: the TLS
        handshake failed (``broker.ssl_cafile``), the broker does not speak TLS on that port
        (``broker.security_protocol``), or the SASL login failed (``broker.sasl_username`` and
        the variable ``broker.sasl_password_env`` names).
        """
        options = self.options()
        servers = [server.strip() for server in self.bootstrap.split(",") if server.strip()]
        if not servers:
            raise ConfigError("broker.bootstrap_servers is empty")
        unreachable: list[str] = []
        for server in servers:
            host, port = _split_host_port(server)
            try:
                await self._probe_server(host, port, options, timeout_s)
                return
            except _Unreachable as exc:
                unreachable.append(f"{server} ({exc})")
        raise BrokerError(f"cannot reach the broker at {'; '.join(unreachable)} (broker.bootstrap_servers)")

    async def _probe_server(self, host: str, port: int, options: dict[str, Any], timeout_s: float) -> None:
        from aiokafka.conn import create_conn
        from aiokafka.errors import KafkaError

        where = f"{host}:{port}"
        try:  # TCP alone: nothing listening is the next server's turn, not a TLS or SASL failure
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
            writer.close()
        except (OSError, TimeoutError) as exc:
            raise _Unreachable(getattr(exc, "strerror", None) or type(exc).__name__) from exc
        transport: dict[str, Any] = {"security_protocol": "SSL" if self.uses_tls else "PLAINTEXT"}
        if self.uses_tls:
            transport["ssl_context"] = options["ssl_context"]
        protocol_hint = f"broker.security_protocol = {self.security_protocol!r}"
        # Then TLS without SASL: a refused certificate is never mistaken for a refused login.
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **transport), timeout_s
            )
        except ssl.SSLCertVerificationError as exc:
            message = exc.verify_message or exc.reason or str(exc)
            raise BrokerError(
                f"TLS handshake with {where} failed: certificate verify failed: {message} ({self._cafile_hint(exc)})"
            ) from exc
        except ssl.SSLError as exc:
            reason = (exc.reason or str(exc)).lower().replace("_", " ")
            raise BrokerError(
                f"TLS handshake with {where} failed: {reason} (does the broker speak TLS on this port? {protocol_hint})"
            ) from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            if self.uses_tls:
                what, hint = "no Kafka answer over TLS", "does the broker speak TLS on this port?"
            else:
                what, hint = "no Kafka answer", "does the broker want TLS?"
            raise BrokerError(
                f"the broker at {where} gave {what} (the connection closed or stayed silent for {timeout_s:g}s: "
                f"{hint} {protocol_hint})"
            ) from exc
        conn.close()
        if not self.uses_sasl:
            return
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    request_timeout_ms=int(timeout_s * 1000),
                    ssl_context=options.get("ssl_context"),
                    security_protocol=self.security_protocol,
                    sasl_mechanism=options["sasl_mechanism"],
                    sasl_plain_username=options["sasl_plain_username"],
                    sasl_plain_password=options["sasl_plain_password"],
                ),
                timeout_s,
            )
        except (KafkaError, KeyError, ValueError, OSError, TimeoutError) as exc:
            raise BrokerError(
                f"SASL {self.mechanism} login as {self.sasl_username!r} at {where} failed: "
                f"{_sasl_reason(exc, self.mechanism)} (check broker.sasl_username, broker.sasl_mechanism "
                f"and the password in ${self.sasl_password_env}, named by broker.sasl_password_env)"
            ) from exc
        conn.close()

    def _cafile_hint(self, exc: ssl.SSLCertVerificationError) -> str:
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            return "the broker's certificate does not name the host in broker.bootstrap_servers"
        if not self.ssl_cafile:
            return "broker.ssl_cafile is empty, so only the system CAs were trusted: set it to the CA that signed it"
        return "is broker.ssl_cafile the CA that signed the broker's certificate?"


class _Unreachable(Exception):
    """Nothing answered at one bootstrap address: the next one may."""


def _split_host_port(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"broker.bootstrap_servers: {server!r} is not host:port")
    return host.strip("[]"), int(port)


def _sasl_reason(exc: BaseException, mechanism: str) -> str:
    from aiokafka.errors import KafkaConnectionError, UnsupportedSaslMechanismError

    if isinstance(exc, KeyError | ValueError):
        # aiokafka's SCRAM client looks for the server's signature in its final message; a broker
        # that refuses the login sends an error there instead (``e=unknown-user``, ``e=invalid-proof``)
        return "the broker rejected the credentials"
    if isinstance(exc, UnsupportedSaslMechanismError):  # its text is the connection's repr
        return f"the broker does not offer SASL {mechanism}"
    if isinstance(exc, KafkaConnectionError):
        return f"the broker closed the connection (does it offer {mechanism}?)"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _check_cafile(path: str) -> None:
    """``broker.ssl_cafile`` must be a readable PEM file with at least one certificate."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"broker.ssl_cafile: cannot read {path}: {exc.strerror}") from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"broker.ssl_cafile: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"broker.ssl_cafile: {path} is not a valid PEM certificate file: {exc.reason or exc}"
        ) from exc
