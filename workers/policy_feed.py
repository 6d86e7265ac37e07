"""Routers and verifiers follow the control topic and apply the newest PolicyUpdate.

No consumer group: every replica reads every update (a group would hand each
update to one replica only). ``start()`` reads the topic up to its end before the
stage takes its first batch, so a restarted replica never decides with an older
version than its peers; afterwards a background task follows the topic and the
stage picks up ``current`` at its next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

from topics.control import PolicyUpdate, decode_control
from topics.errors import DecodeError
from topics.reader import Record, TopicReader
from workers.stage import Handler

M = TypeVar("M")
CATCH_UP_TIMEOUT_S = 10.0


class PolicyFeed:
    """The newest :class:`PolicyUpdate` on ``topic`` (``None`` until the controller published one)."""

    def __init__(self, kafka: dict[str, Any], topic: str) -> None:
        self.current: PolicyUpdate | None = None
        self._reader = TopicReader(kafka, [topic], partitions={topic: 1}, fetch_max_wait_ms=50)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._reader.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._catch_up(), timeout=CATCH_UP_TIMEOUT_S)
        self._task = asyncio.create_task(self._reader.follow(lambda record: self._take([record])))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._reader.stop()

    async def _catch_up(self) -> None:
        async for batch in self._reader.read_to_end():
            self._take(batch)

    def _take(self, records: list[Record]) -> None:
        for record in records:
            try:
                message = decode_control(record.value or b"")
            except DecodeError:
                continue  # the controller answers bad commands; a stage only looks for updates
            if isinstance(message, PolicyUpdate) and (self.current is None or message.version > self.current.version):
                self.current = message


class FollowsPolicy(Handler[M]):
    """A stage that applies policy updates (router, verifier): its feed lives as long as the stage."""

    feed: PolicyFeed | None = None

    async def start(self) -> None:
        if self.feed is not None:
            await self.feed.start()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
