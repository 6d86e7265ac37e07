"""Create and delete a deployment's topics through the Kafka admin API."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from topics.errors import BrokerError


async def ensure_topics(
    client_options: Mapping[str, Any], partitions: Mapping[str, int], replication: int = 1
) -> list[str]:
    """Create every topic in ``partitions`` that does not exist yet; return those created.

    Existing topics are left as they are (their partition count is the operator's).
    """
    admin = AIOKafkaAdminClient(**client_options)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=count, replication_factor=replication)
            for name, count in partitions.items()
            if name not in existing
        ]
        if missing:
            # another process may create them between list and create: fine
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [topic.name for topic in missing]
    except KafkaError as exc:
        raise BrokerError(f"could not create topics: {exc}") from exc
    finally:
        await admin.close()


async def partition_counts(client_options: Mapping[str, Any], topics: list[str]) -> dict[str, int]:
    """How many partitions each of ``topics`` has on the broker (topics it lacks are left out)."""
    admin = AIOKafkaAdminClient(**client_options)
    try:
        await admin.start()
        present = set(await admin.list_topics())
        described = await admin.describe_topics([t for t in topics if t in present]) if present else []
        return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
    except KafkaError as exc:
        raise BrokerError(f"could not describe topics: {exc}") from exc
    finally:
        await admin.close()


async def delete_topics(client_options: Mapping[str, Any], names: list[str]) -> None:
    """Delete ``names`` that exist (the embedded broker keeps everything in memory)."""
    admin = AIOKafkaAdminClient(**client_options)
    try:
        await admin.start()
        present = [name for name in names if name in set(await admin.list_topics())]
        if present:
            await admin.delete_topics(present)
    except KafkaError as exc:
        raise BrokerError(f"could not delete topics: {exc}") from exc
    finally:
        await admin.close()


async def cluster_id(client: AIOKafkaClient) -> str:
    """The id the broker reports in its metadata (Metadata v2+; "" when it sends none).

    It changes only when the cluster itself is new: the embedded provider starts every
    broker with a fresh id, so a memory broker that restarted (and lost every record)
    announces itself by it, whatever its offsets happen to look like.
    """
    brokers = client.cluster.brokers()
    if not brokers:
        await client.force_metadata_update()
        brokers = client.cluster.brokers()
    if not brokers:
        raise BrokerError("the broker announced no brokers in its metadata")
    node = next(iter(brokers)).nodeId
    response = await client.send(node, MetadataRequest(topics=[], allow_auto_topic_creation=False))
    return str(getattr(response, "cluster_id", "") or "")
