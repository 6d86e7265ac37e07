"""Unit tests touch no infrastructure: starting Ray or opening a Kafka client here is a bug."""

from __future__ import annotations

from typing import NoReturn

import pytest


def _forbidden(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("unit tests must not start Ray or connect to a broker; write an integration test")


@pytest.fixture(autouse=True)
def _no_infrastructure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ray.init", _forbidden)
    monkeypatch.setattr("aiokafka.AIOKafkaProducer.start", _forbidden)
    monkeypatch.setattr("aiokafka.AIOKafkaConsumer.start", _forbidden)
