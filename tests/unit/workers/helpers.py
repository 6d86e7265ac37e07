"""Builders for stage unit tests: records and inbound items without a broker."""

from __future__ import annotations

from typing import Any, TypeVar

from aiokafka import ConsumerRecord

from infra.config import parse_config
from workers.spec import DeploymentSpec
from workers.stage import Inbound

M = TypeVar("M")
TRACE = [("traceparent", b"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01")]


def config(**overrides: Any) -> DeploymentSpec:
    """The runtime spec of a two-tier simulated deployment (no broker: the address is never dialled)."""
    tiers = [
        {"name": "small", "backend": "simulated", "cost": 0.001, "threshold": 0.8},
        {"name": "large", "backend": "simulated", "cost": 0.1, "threshold": 0.8},
    ]
    return parse_config({"namespace": "unit", "tiers": tiers} | overrides).runtime("127.0.0.1:9")


def inbound(message: M, topic: str = "unit.x", offset: int = 0, key: str = "k") -> Inbound[M]:
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic, 0, offset, 0, 0, key.encode(), b"", None, len(key), 0, TRACE
    )
    return Inbound(message, record, list(TRACE))
