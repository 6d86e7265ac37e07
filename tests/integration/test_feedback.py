"""Labels reach ``<ns>.feedback`` through ``tierflow feedback``'s own code, on the real broker; the controller
of a running pipeline counts the valid ones by kind and dead-letters a record that is not a label."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from infra.cli.feedback import _send, read_labels
from infra.pipeline import Pipeline
from topics.feedback import Feedback
from topics.messages import DeadLetter
from topics.reader import TopicReader

from .conftest import WAIT_S, running, simulated_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

LINES = [
    b'{"id": "r1", "correct": false, "source": "reviewer"}\n',
    b'{"id": "r2", "score": 0.75}\n',
    b'{"id": "r3", "preferred_tier": "large", "at": 1700000000}\n',
]
NOT_A_LABEL = b"\x81\xa1k\xa9request@1"
"""A msgpack map tagged as another kind of message: what a stray producer might write to the topic."""


async def _labels_counted(pipeline: Pipeline) -> dict[str, int]:
    state = await asyncio.wait_for(pipeline.controller.state.remote(), timeout=WAIT_S)
    return dict(state["labels"])


async def _read_all(kafka: dict[str, Any], topic: str, partitions: dict[str, int]) -> list[bytes]:
    reader = TopicReader(kafka, [topic], partitions=partitions)
    await reader.start()
    try:
        return [record.value or b"" async for batch in reader.read_to_end() for record in batch]
    finally:
        await reader.stop()


async def test_labels_are_produced_counted_and_a_bad_one_dead_lettered(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any]
) -> None:
    config = simulated_config(tmp_path)
    given = read_labels(LINES, "labels.jsonl", config)
    assert given.problems == []
    async with running(config, bootstrap, kafka) as pipeline:
        deadline = time.monotonic() + WAIT_S
        while (await asyncio.wait_for(pipeline.controller.state.remote(), timeout=WAIT_S))["version"] < 1:
            assert time.monotonic() < deadline, "the controller never published its first update"
            await asyncio.sleep(0.2)  # its readers are positioned once it publishes
        await asyncio.wait_for(_send(config, bootstrap, given.labels), timeout=WAIT_S)
        producer = AIOKafkaProducer(**kafka)
        await producer.start()
        try:  # an outsider's record on the feedback topic that is not a label
            await producer.send_and_wait(config.layout.feedback, NOT_A_LABEL, key=b"r4")
        finally:
            await producer.stop()

        expected = {"correct": 1, "score": 1, "preferred_tier": 1, "dead_lettered": 1}
        deadline = time.monotonic() + WAIT_S
        while (counted := await _labels_counted(pipeline)) != expected:
            assert time.monotonic() < deadline, f"the controller counted {counted}, not {expected}"
            await asyncio.sleep(0.2)

        partitions = config.partitions()
        stored = await _read_all(kafka, config.layout.feedback, partitions)
        assert stored.count(NOT_A_LABEL) == 1
        labels = sorted((Feedback.from_wire(v) for v in stored if v != NOT_A_LABEL), key=lambda label: label.request_id)
        assert [(label.request_id, label.verdict) for label in labels] == [
            ("r1", "correct"),
            ("r2", "score"),
            ("r3", "preferred_tier"),
        ]
        assert labels[0].source == "reviewer" and labels[0].correct is False
        assert labels[2].at == 1_700_000_000
        letters = [DeadLetter.from_wire(v) for v in await _read_all(kafka, config.layout.dlq, partitions)]
        (letter,) = [d for d in letters if d.source_topic == config.layout.feedback]
        assert letter.stage == "controller"
        assert letter.request_id == "r4"
        assert letter.reason == "wrong_kind"
