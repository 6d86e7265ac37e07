"""Messages, their wire format and topic layout: the contract between stages."""

from topics.errors import BrokerError, ConfigError, DataError, DecodeError, TierflowError
from topics.messages import (
    Answer,
    DeadLetter,
    Hints,
    HistoryEntry,
    Request,
    Result,
    Status,
    Task,
)
from topics.names import TopicLayout
from topics.wire import DEFAULT_MAX_PAYLOAD_BYTES, SCHEMA_VERSION

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "Answer",
    "BrokerError",
    "ConfigError",
    "DataError",
    "DeadLetter",
    "DecodeError",
    "Hints",
    "HistoryEntry",
    "Request",
    "Result",
    "Status",
    "Task",
    "TierflowError",
    "TopicLayout",
]
