"""Notice a broker that lost its data (the memory engine restarted) and rebuild the topics.

The embedded broker keeps everything in memory: when it restarts, every topic,
record and committed offset is gone, while the stage replicas reconnect to the same
address and carry on. The watchdog sees the deployment's topics missing, says so,
and recreates them with their configured partition counts; stages then resume from
offset 0 of the new topics. Requests that were in the lost topics are the clients'
to resubmit (see ``ResultCollector.broker_resets``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from topics.admin import cluster_id, ensure_topics, partition_counts
from topics.errors import BrokerError

log = logging.getLogger("tierflow.watchdog")


class BrokerWatchdog:
    """Call ``check()`` periodically; it returns True when it found the broker's data gone and rebuilt the topics.

    Two signals, neither of which a healthy broker gives: the deployment's topics are
    missing, or the broker reports another cluster id than at the first check (the
    embedded provider starts every broker with a fresh one; a client may have
    recreated the topics before the watchdog looked).
    """

    def __init__(self, kafka: dict[str, Any], partitions: Mapping[str, int], replication: int = 1) -> None:
        self.kafka = kafka
        self.partitions = dict(partitions)
        self.replication = replication
        self.resets = 0
        self.cluster = ""

    async def check(self) -> bool:
        admin = AIOKafkaAdminClient(**self.kafka)
        try:
            await admin.start()
            present = set(await admin.list_topics())
            cluster = await cluster_id(admin._client)
        except (KafkaError, BrokerError):
            return False  # unreachable right now: nothing to conclude yet
        finally:
            await admin.close()
        missing = sorted(set(self.partitions) - present)
        new_cluster = bool(self.cluster and cluster and cluster != self.cluster)
        self.cluster = cluster or self.cluster
        if not missing and not new_cluster:
            return False
        self.resets += 1
        what = f"{len(missing)} topics ({missing[0]}…)" if missing else f"its data (new cluster id {cluster})"
        log.warning("broker lost %s: data is gone; recreating the topics and rewinding the stages", what)
        await ensure_topics(self.kafka, self.partitions, self.replication)
        with contextlib.suppress(KafkaError, BrokerError):
            counts = await partition_counts(self.kafka, sorted(self.partitions))
            for topic, count in counts.items():
                if count != self.partitions[topic]:
                    # a client's metadata request made the new broker create it with its default count
                    log.warning(
                        "%s came back with %d partitions, not the configured %d (a client asked for it before "
                        "it was rebuilt); every stage and the client read them all, nothing is lost",
                        topic,
                        count,
                        self.partitions[topic],
                    )
        return True
