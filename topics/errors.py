"""One exception root for tierflow, and the errors every layer raises.

Every third-party error is re-raised as one of these ``from`` the original, so
the CLI and the HTTP API can print one line. They live in the lowest package
because every layer raises them: a bad config value is found by the config
loader (infra) and by the backend or policy that owns the option (workers,
policies); a bad record by the decoder (topics).
"""

from __future__ import annotations


class TierflowError(Exception):
    """Root of every error tierflow raises on purpose."""


class ConfigError(TierflowError):
    """The configuration is invalid; the message names the bad key."""


class DecodeError(TierflowError):
    """A record could not be decoded or failed validation.

    ``reason`` is a short stable code (``not_msgpack``, ``missing_field``,
    ``wrong_type``, ``out_of_range``, ``too_large``, ``bad_schema``,
    ``unknown_tier``) recorded on the dead letter, so operators can count by it.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(TierflowError):
    """The broker could not be started or reached."""


class DataError(TierflowError):
    """A dataset, model file or input file is missing, corrupt or malformed."""
