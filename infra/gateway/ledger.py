"""The gateway's state on Kafka: tenants' reservations and settlements, and idempotent calls' results.

A server process keeps its tenants' :class:`~policies.admission.BudgetLedger` in memory for
speed, and writes every reservation (before the call is sent) and every settlement (once its
outcome is in) to ``<ns>.ledger`` as a :class:`~topics.messages.LedgerEntry`. At start it
replays that topic from the beginning, then follows it: so a budget holds across any number
of server processes behind one address and across restarts, and a settled call that carried
an ``Idempotency-Key`` keeps its Result there for a retry that reaches another process or a
restarted one.

Processes that admit calls at the same moment each see the other's reservation a fetch later
(milliseconds), so together they can overshoot a budget by what they admit in that window: the
price of not serialising every call through one owner, as in every distributed rate limiter.
The replay reads the whole topic (one partition): on a broker without retention it grows by
two small records per budgeted call, which is another reason the embedded broker is for
trying things out (see the README's section on its limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from topics.errors import BrokerError, DecodeError
from topics.messages import LedgerEntry
from topics.names import TopicLayout
from topics.produce import CoalescingProducer
from topics.reader import Record, TopicReader, stop_quietly

log = logging.getLogger("tierflow.gateway")


class LedgerLog:
    """``start()`` replays the ledger into ``apply`` and follows it; ``append()`` writes an entry."""

    def __init__(
        self,
        kafka: dict[str, Any],
        layout: TopicLayout,
        apply: Callable[[LedgerEntry], None],
        fetch_max_wait_ms: int = 10,
    ) -> None:
        self.topic = layout.ledger
        self.apply = apply
        self._reader = TopicReader(kafka, [self.topic], start_at="beginning", fetch_max_wait_ms=fetch_max_wait_ms)
        self._producer = AIOKafkaProducer(**kafka, acks="all", linger_ms=0)
        self._sender = CoalescingProducer(self._producer)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Replay everything written so far (before the first call is taken), then follow."""
        try:
            await self._producer.start()
        except KafkaError as exc:
            await stop_quietly(self._producer)
            raise BrokerError(f"cannot reach the broker: {exc}") from exc
        await self._reader.start()
        replayed = 0
        async for batch in self._reader.read_to_end():
            for record in batch:
                self._take(record)
            replayed += len(batch)
        log.info("gateway: replayed %d ledger entries", replayed)
        self._task = asyncio.create_task(self._reader.follow(self._take))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._reader.stop()
        await stop_quietly(self._producer)

    async def append(self, entry: LedgerEntry) -> None:
        """Write ``entry`` and wait for the broker's ack (entries of concurrent calls share a batch)."""
        await self._sender.send([(self.topic, entry.request_id.encode(), entry.to_wire(), ())])

    def _take(self, record: Record) -> None:
        try:
            entry = LedgerEntry.from_wire(record.value or b"")
        except DecodeError as exc:  # not ours to refuse: skipped, and said once per record
            log.warning("gateway: skipping an undecodable ledger record at offset %d: %s", record.offset, exc)
            return
        self.apply(entry)
