"""Client side of a deployment: submit requests and collect their results.

The collector reads the results and dead-letter topics from the beginning with no
consumer group and keeps the first result per request id: the same idempotence
the results sink has, so a repeated hop never shows a client two answers. It
counts raw duplicates separately so the repeats stay visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from topics.errors import BrokerError, DecodeError
from topics.messages import Answer, DeadLetter, Request, Result
from topics.names import TopicLayout
from topics.produce import CoalescingProducer
from topics.reader import TopicReader, stop_quietly
from workers.stage import PRODUCER_BATCH_BYTES
from workers.telemetry import new_trace_headers

log = logging.getLogger("tierflow.client")

RESUBMIT_QUIET_S = 10.0
"""After a broker lost its data: seconds without any result before still-missing requests are resubmitted again."""
RESUBMIT_ROUNDS = 3
"""How often, at most, those are resubmitted again after one loss."""


class RequestProducer:
    """Produces Requests keyed by id, each starting its own trace."""

    def __init__(self, kafka: dict[str, Any], layout: TopicLayout) -> None:
        self.layout = layout
        self._producer = AIOKafkaProducer(**kafka, acks="all", linger_ms=2, max_batch_size=PRODUCER_BATCH_BYTES)
        self._sender = CoalescingProducer(self._producer)

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise BrokerError(f"cannot reach the broker: {exc}") from exc

    async def stop(self) -> None:
        await stop_quietly(self._producer)

    async def send_many(self, requests: Iterable[Request]) -> None:
        """Produce ``requests`` and wait until the broker acknowledged every one (concurrent callers'
        requests share a produce: a gateway's calls, see :class:`~topics.produce.CoalescingProducer`)."""
        topic = self.layout.requests
        await self._sender.send([(topic, r.id.encode(), r.to_wire(), new_trace_headers()) for r in requests])

    async def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Produce arbitrary bytes to the requests topic (for poison-record tests and tools)."""
        await (await self._producer.send(self.layout.requests, value, key=key))


@dataclass
class Collected:
    results: dict[str, Result] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_ids: set[str] = field(default_factory=set)
    answers: dict[str, Answer] = field(default_factory=dict)
    """Distinct answers by answer id (only with ``include_answers``)."""
    raw_duplicates: int = 0
    undecodable: int = 0

    def dead_letter_of(self, request_id: str) -> DeadLetter | None:
        """The first dead letter of a request that ended as one; ``None`` once it has a result too.

        A later hop may dead-letter a record of a request whose result still arrives (a repeated
        hop), and that request did get its answer: only a dead letter with no result is an ending.
        """
        if request_id not in self.dead_ids or request_id in self.results:
            return None
        return next((letter for letter in self.dead_letters if letter.request_id == request_id), None)


class ResultCollector:
    """Tails ``results`` and ``dlq`` (and optionally ``answers``) from offset 0; first result per id wins."""

    def __init__(
        self, kafka: dict[str, Any], layout: TopicLayout, *, include_answers: bool = False, fetch_max_wait_ms: int = 10
    ) -> None:
        self.layout = layout
        self.topics = [layout.results, layout.dlq] + ([layout.answers] if include_answers else [])
        self.broker_resets = 0
        """How often the broker turned out to have lost its data (a memory broker that restarted)."""
        self.collected = Collected()
        self._reader = TopicReader(kafka, self.topics, fetch_max_wait_ms=fetch_max_wait_ms)
        self._cluster = ""
        self._next_reset_check = 0.0

    async def start(self) -> None:
        try:
            await self._reader.start()
            self._cluster = await self._reader.cluster_id()
        except (KafkaError, BrokerError) as exc:
            await self._reader.stop()
            raise BrokerError(f"cannot read results: {exc}") from exc

    async def stop(self) -> None:
        await self._reader.stop()

    async def poll(self, timeout_ms: int = 200) -> list[str]:
        """Read what is available; return the request ids that got their first result or dead letter."""
        settled = (self._take(record.topic, record.value or b"") for record in await self._reader.poll(timeout_ms))
        return [request_id for request_id in settled if request_id is not None]

    async def lost_broker_data(self) -> bool:
        """True (once per event) when the broker is not the one we started reading from: its data is gone.

        The signal is the broker's cluster id, which the embedded provider makes new at every
        start. Offsets are no signal: Tansu's reported end can trail the records a fetch has
        already returned, which made an end-offset comparison cry wolf on a healthy, busy broker.
        """
        if time.monotonic() < self._next_reset_check:
            return False
        self._next_reset_check = time.monotonic() + 1.0
        try:
            cluster = await self._reader.cluster_id()
            await self._reader.take_new_partitions()  # a rebuilt topic may have gained some
        except (KafkaError, BrokerError):
            return False  # broker away right now; look again later
        if not cluster or cluster == self._cluster:
            return False
        try:
            await self._reader.rewind()
        except KafkaError:
            return False  # still at the old positions: rewinding is retried at the next look, not skipped
        log.warning("the broker is a new one (cluster id %s, was %s): its data is gone", cluster, self._cluster)
        self._cluster = cluster
        self.broker_resets += 1
        return True

    def _take(self, topic: str, value: bytes) -> str | None:
        c = self.collected
        try:
            if topic == self.layout.dlq:
                letter = DeadLetter.from_wire(value)
                c.dead_letters.append(letter)
                rid = letter.request_id
                if rid is None or rid in c.dead_ids or rid in c.results:
                    return None
                c.dead_ids.add(rid)
                return rid
            if topic == self.layout.answers:
                answer = Answer.from_wire(value)
                c.answers.setdefault(answer.answer_id, answer)
                return None
            result = Result.from_wire(value)
        except DecodeError:
            c.undecodable += 1
            return None
        if result.request_id in c.results:
            c.raw_duplicates += 1
            return None
        c.results[result.request_id] = result
        return None if result.request_id in c.dead_ids else result.request_id

    async def wait_for(
        self,
        ids: set[str],
        timeout_s: float,
        on_progress: Callable[[int], None] | None = None,
        stop: asyncio.Event | None = None,
        resubmit: Callable[[set[str]], Awaitable[None]] | None = None,
    ) -> set[str]:
        """Poll until every id has a result or a dead letter, the timeout, or ``stop``; return the missing ids.

        With ``resubmit``, a broker that lost its data is noticed and the ids still missing are handed to
        it, so no request the client holds is silently dropped. After such a loss, ids still unanswered
        when no result has come for ``RESUBMIT_QUIET_S`` are handed over again (at most
        ``RESUBMIT_ROUNDS`` times): the stages rewind to the rebuilt topics, but a record can still slip
        past a stage in the confusion of a broker restart, and the client is the one that knows what is
        unanswered. A healthy broker never triggers either: both wait for a real loss.
        """
        deadline = time.monotonic() + timeout_s
        missing = set(ids) - self.collected.results.keys() - self.collected.dead_ids
        resubmitted_at: float | None = None
        rounds = 0
        while True:
            settled = await self.poll()
            now = time.monotonic()
            if on_progress and settled:
                on_progress(len(settled))
            missing.difference_update(settled)
            if settled and resubmitted_at is not None:
                resubmitted_at = now  # still answering: quiet is measured from the last result
            if resubmit is not None and missing and await self.lost_broker_data():
                log.warning("the broker lost its data: resubmitting %d unanswered requests", len(missing))
                await resubmit(set(missing))
                resubmitted_at, rounds = now, 0
            elif (
                resubmit is not None
                and missing
                and resubmitted_at is not None
                and rounds < RESUBMIT_ROUNDS
                and now - resubmitted_at > RESUBMIT_QUIET_S
            ):
                rounds += 1
                log.warning(
                    "%d resubmitted requests still unanswered after %.0f s without a result: resubmitting them again",
                    len(missing),
                    RESUBMIT_QUIET_S,
                )
                await resubmit(set(missing))
                resubmitted_at = now
            if not missing or time.monotonic() > deadline or (stop is not None and stop.is_set()):
                return missing
