"""Fetch pacing: a consumer that has seen nothing for a while asks the broker less often.

A consumer with nothing to read still sends one fetch every ``fetch_max_wait_ms``,
and each costs both sides: an idle pipeline of a dozen consumers polling every 10 ms
kept most of a core busy (``load_tests/pipeline_throughput.py``'s idle phase). Kafka's
answer is the long poll (a large ``fetch_max_wait_ms`` with ``fetch_min_bytes = 1``
returns as soon as data arrives). The embedded Tansu returns records that are there when
a fetch arrives at once, but one written while a fetch waits only when it next looks: at
half the wait, then half of what is left (``load_tests/broker_fetch_wake.py``: with a
1,000 ms wait, a record written 50-400 ms in came back at ~500 ms), so a long wait there
is up to half of it in latency on a hop. Hence pacing on the client: the short wait
while records flow, a long one only after ``idle_after_s`` with none, and the short one
again from the first record. The first request after a quiet spell pays up to half the
long wait per hop; traffic of one request every few seconds keeps every consumer on the
short wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

IDLE_AFTER_S = 5.0
"""Seconds without a record before a consumer switches to its idle wait."""


@dataclass
class FetchPacer:
    """Switches one consumer between ``busy_ms`` and ``idle_ms`` fetch waits; ``idle_ms <= busy_ms`` turns it off."""

    busy_ms: int
    idle_ms: int
    idle_after_s: float = IDLE_AFTER_S
    clock: Callable[[], float] = time.monotonic
    idle: bool = False
    _last_record: float = field(default=-1.0, repr=False)

    def wait_ms(self, records: int) -> int:
        """The fetch wait to use after a poll that returned ``records`` records."""
        now = self.clock()
        if records or self._last_record < 0:
            self._last_record = now
            self.idle = False
        elif self.idle_ms > self.busy_ms and now - self._last_record >= self.idle_after_s:
            self.idle = True
        return self.idle_ms if self.idle else self.busy_ms

    def observe(self, consumer: AIOKafkaConsumer, records: int) -> None:
        """Set ``consumer``'s next fetch wait from a poll's outcome.

        aiokafka reads its fetcher's ``_fetch_max_wait_ms`` afresh for every fetch request
        and has no public setter; a started consumer always has a fetcher.
        """
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = self.wait_ms(records)
