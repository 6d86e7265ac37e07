"""One exception root for tierflow, with a ``retriable`` flag callers read.

Callers decide between retrying and giving up by reading ``retriable`` instead of
catching lists of types (the aiokafka convention). Every third-party error is
re-raised as one of these ``from`` the original, so the CLI can print one line.
"""

from __future__ import annotations


class TierflowError(Exception):
    """Root of every error tierflow raises on purpose."""

    retriable: bool = False


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

    retriable = True


class DataError(TierflowError):
    """A dataset, model file or input file is missing, corrupt or malformed."""
