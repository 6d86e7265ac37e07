"""Notice a broker that lost its data (the memory engine restarted) and rebuild the topics.

The embedded broker keeps everything in memory: when it restarts, every topic,
record and committed offset is gone, while the stage replicas reconnect to the same
address and carry on. The watchdog sees the deployment's topics missing, says so,
and recreates them with their configured partition counts; stages then resume from
offset 0 of the new topics. Requests that were in the lost topics are the clients'
to resubmit (see ``ResultCollector.broker_resets``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from topics.admin import ensure_topics

log = logging.getLogger("tierflow.watchdog")


class BrokerWatchdog:
    """Call ``check()`` periodically; it returns True when it found the topics gone and rebuilt them."""

    def __init__(self, kafka: dict[str, Any], partitions: Mapping[str, int], replication: int = 1) -> None:
        self.kafka = kafka
        self.partitions = dict(partitions)
        self.replication = replication
        self.resets = 0

    async def check(self) -> bool:
        admin = AIOKafkaAdminClient(**self.kafka)
        try:
            await admin.start()
            present = set(await admin.list_topics())
        except KafkaError:
            return False  # unreachable right now: nothing to conclude yet
        finally:
            await admin.close()
        missing = sorted(set(self.partitions) - present)
        if not missing:
            return False
        self.resets += 1
        log.warning("broker lost %d topics (%s…): data is gone; recreating them", len(missing), missing[0])
        await ensure_topics(self.kafka, self.partitions, self.replication)
        return True
