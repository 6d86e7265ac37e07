"""One reader of the results per server process, handing each result to the call waiting for it.

Every HTTP call waits for its own request id, but the server reads ``<ns>.results`` and
``<ns>.dlq`` once (a group-less :class:`~topics.reader.TopicReader` from their end, started
before the first call is taken), so a thousand calls in flight cost one consumer, not a
thousand. The first outcome per id wins (the pipeline is at-least-once); the last
:data:`KEEP` outcomes are kept, so a client that retries with the same ``Idempotency-Key``
gets the finished result without a second model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Any

from aiokafka.errors import KafkaError

from topics.errors import BrokerError, DecodeError
from topics.messages import DeadLetter, Result
from topics.names import TopicLayout
from topics.reader import TopicReader

log = logging.getLogger("tierflow.gateway")
KEEP = 100_000
Outcome = Result | DeadLetter


class ResultWaiter:
    """``start()``, then ``expect(id)`` before sending and ``wait(id, timeout)`` after; ``stop()`` is safe twice."""

    def __init__(self, kafka: dict[str, Any], layout: TopicLayout, fetch_max_wait_ms: int = 10) -> None:
        self.layout = layout
        topics = [layout.results, layout.dlq]
        self._reader = TopicReader(kafka, topics, start_at="end", fetch_max_wait_ms=fetch_max_wait_ms)
        self._finished: OrderedDict[str, Outcome] = OrderedDict()
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._reader.start()
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._reader.stop()
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether the broker answers a metadata request within ``timeout_s`` (what ``/healthz`` reports)."""
        try:
            await asyncio.wait_for(self._reader.cluster_id(), timeout_s)
        except (KafkaError, BrokerError, OSError, TimeoutError):
            return False
        return True

    def remember(self, result: Result) -> None:
        """A result read elsewhere (the ledger keeps idempotent calls' results across restarts)."""
        self._finish(result)

    def finished(self, request_id: str) -> Outcome | None:
        return self._finished.get(request_id)

    def in_flight(self, request_id: str) -> bool:
        return request_id in self._waiting

    def expect(self, request_id: str) -> None:
        """Register interest before the request is sent, so its result cannot pass unseen."""
        if request_id not in self._waiting:
            self._waiting[request_id] = asyncio.get_running_loop().create_future()

    def claimed_elsewhere(self, request_id: str) -> None:
        """Another server process sent this request (the ledger says): a retry here waits for its result."""
        if request_id not in self._finished:
            self.expect(request_id)

    def forget(self, request_id: str) -> None:
        """The request was never sent (the broker refused it): nothing will come."""
        if (future := self._waiting.pop(request_id, None)) is not None:
            future.cancel()

    async def wait(self, request_id: str, timeout_s: float) -> Outcome:
        """The outcome of ``request_id``; ``TimeoutError`` after ``timeout_s`` (the call is still expected)."""
        if (done := self._finished.get(request_id)) is not None:
            return done
        self.expect(request_id)
        return await asyncio.wait_for(asyncio.shield(self._waiting[request_id]), timeout_s)

    async def _read(self) -> None:
        while True:
            try:
                records = await self._reader.poll(200)
            except KafkaError as exc:  # the broker is away: the calls wait (up to their deadlines) meanwhile
                log.warning("gateway: reading results failed, again in 1 s: %r", exc)
                await asyncio.sleep(1.0)
                continue
            for record in records:
                self._take(record.topic, record.value or b"")

    def _take(self, topic: str, value: bytes) -> None:
        try:
            outcome: Outcome = DeadLetter.from_wire(value) if topic == self.layout.dlq else Result.from_wire(value)
        except DecodeError:
            return
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        request_id = outcome.request_id
        if not request_id or request_id in self._finished:
            return
        self._finished[request_id] = outcome
        while len(self._finished) > KEEP:
            self._finished.popitem(last=False)
        future = self._waiting.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(outcome)
