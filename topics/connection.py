"""How a client reaches the broker: bootstrap servers plus TLS and SASL settings.

A plain, picklable value that travels to every replica; :meth:`KafkaConnection.options`
builds the aiokafka options inside the process that uses them (an SSL context does not
pickle, and a password is read from the environment where it is needed, never shipped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from topics.errors import ConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password_env: str = ""
    """Name of the environment variable holding the SASL password (never the password)."""
    ssl_cafile: str = ""

    def options(self) -> dict[str, Any]:
        """aiokafka client options (bootstrap plus SASL/TLS) for any client of this broker."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile or None)
        if self.security_protocol.startswith("SASL"):
            password = os.environ.get(self.sasl_password_env, "") if self.sasl_password_env else ""
            if self.sasl_password_env and not password:
                raise ConfigError(f"broker.sasl_password_env names {self.sasl_password_env!r}, which is not set")
            options |= {
                "sasl_mechanism": self.sasl_mechanism or "PLAIN",
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": password,
            }
        return options
