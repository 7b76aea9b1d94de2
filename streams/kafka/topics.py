"""Kafka topics the worker needs: facts about source topics, and dead-letter topics made to fit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from streams.kafka.broker_failures import start_client
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How every consumer of ours reads a topic: records of an aborted transaction are never
#: delivered, and those of an open one only once it commits (the Java client's and aiokafka's
#: default, ``read_uncommitted``, delivers both). A copy must never show a state its source
#: rolled back, and ``verify`` must read what the worker applies.
ISOLATION_LEVEL = "read_committed"


def consumer_options(settings: Settings) -> dict[str, Any]:
    """Return the keyword arguments every aiokafka consumer of ours takes (the CLI's, the
    dead-letter reader's): the security ones, and committed records only."""
    return {**settings.kafka_client_options(), "isolation_level": ISOLATION_LEVEL}


MAX_MESSAGE_BYTES = "max.message.bytes"
#: Kafka's default ``message.max.bytes``, for a broker that does not say.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


async def admin_client(settings: Settings) -> Any:
    """Return a started aiokafka admin client (the caller closes it)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.broker_hosts,
        **settings.kafka_client_options(),
        request_timeout_ms=15_000,
    )
    await start_client(settings, admin.start(), admin.close, timeout=20)
    return admin


async def with_admin(settings: Settings, call: Callable[[Any], Awaitable[T]]) -> T:
    """Return what ``call`` returns given a started admin client, closed after."""
    admin = await admin_client(settings)
    try:
        return await call(admin)
    finally:
        await admin.close()


async def topic_partitions(admin: Any, topic: str) -> list[int] | None:
    """Return the partitions of ``topic`` as the brokers describe it, or None when it is
    missing (never creates it)."""
    if topic not in await admin.list_topics():
        return None
    for item in await admin.describe_topics([topic]):
        if item.get("topic") == topic and not item.get("error_code"):
            return sorted(int(p["partition"]) for p in item.get("partitions", []))
    return []


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """Return the partitions of ``topic`` ([] when missing; never creates it), with an admin
    client of its own."""
    partitions = await with_admin(settings, lambda admin: topic_partitions(admin, topic))
    return partitions or []


async def topic_facts(admin: Any, topic: str) -> tuple[int, int] | None:
    """Return ``(partitions, max.message.bytes)`` of ``topic``, or None when it is missing."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    partitions = await topic_partitions(admin, topic)
    if partitions is None:
        return None
    limit = DEFAULT_MAX_MESSAGE_BYTES
    described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    for response in described:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == MAX_MESSAGE_BYTES and entry[1] is not None:
                    limit = int(entry[1])
    return len(partitions), limit


async def ensure_dead_letter_topic(settings: Settings, source: str, topic: str) -> int:
    """Create ``topic`` when missing, taking records as large as ``source`` does; return its limit.

    A dead letter is the rejected record itself plus headers, so the dead-letter topic must
    take whatever its source topic takes; a record too large for it would hold its partition.
    """
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = await admin_client(settings)
    try:
        source_facts = await topic_facts(admin, source)
        want = DEFAULT_MAX_MESSAGE_BYTES if source_facts is None else source_facts[1]
        partitions = settings.topic_partitions if source_facts is None else source_facts[0]
        existing = await topic_facts(admin, topic)
        if existing is None:
            new = NewTopic(
                topic,
                max(1, partitions),
                settings.topic_replicas,
                topic_configs={MAX_MESSAGE_BYTES: str(want + 64 * 1024)},
            )
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                await admin.create_topics([new])
            return want + 64 * 1024
        if existing[1] < want:
            log.warning(
                "dead-letter topic %s takes records up to %d bytes but %s takes %d: a larger "
                "rejected record will hold its partition; raise %s's max.message.bytes",
                topic,
                existing[1],
                source,
                want,
                topic,
            )
        return int(existing[1])
    finally:
        await admin.close()


async def fit_repartition_topic(settings: Settings, source: str, target: str) -> tuple[int, int]:
    """Return the largest record ``source`` takes and the largest ``target`` takes (the
    broker's default while it is missing); warn when ``target`` takes less.

    Faust creates the repartition topic with the broker's defaults; a record of ``source``
    larger than ``target`` takes holds its partition (``streams.apply.forwarder.Forwarder``).
    """
    admin = await admin_client(settings)
    try:
        source_facts = await topic_facts(admin, source)
        want = DEFAULT_MAX_MESSAGE_BYTES if source_facts is None else source_facts[1]
        target_facts = await topic_facts(admin, target)
        has = DEFAULT_MAX_MESSAGE_BYTES if target_facts is None else target_facts[1]
        if has < want:
            log.warning(
                "repartition topic %s takes records up to %d bytes but %s takes %d: a larger "
                "record will hold its partition; raise %s's max.message.bytes",
                target,
                has,
                source,
                want,
                target,
            )
        return want, has
    finally:
        await admin.close()


async def max_message_bytes(settings: Settings, topic: str) -> int:
    """Return the largest record ``topic`` takes now (the broker's default while it is missing)."""
    admin = await admin_client(settings)
    try:
        facts = await topic_facts(admin, topic)
        return DEFAULT_MAX_MESSAGE_BYTES if facts is None else facts[1]
    finally:
        await admin.close()


async def topic_ids(settings: Settings, topics: list[str]) -> dict[str, str] | None:
    """Return the ids of ``topics`` that exist (None: the brokers give no ids,
    ``streams.kafka.topic_ids``)."""
    from aiokafka.client import AIOKafkaClient

    from streams.kafka.topic_ids import read_topic_ids

    client = AIOKafkaClient(
        bootstrap_servers=settings.broker_hosts, **settings.kafka_client_options()
    )
    await start_client(settings, client.bootstrap(), client.close, timeout=20)
    try:
        return await read_topic_ids(client, topics)
    finally:
        await client.close()
