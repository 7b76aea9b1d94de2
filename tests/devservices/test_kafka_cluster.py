"""The three-node development cluster really replicates: RF 3, ISR 3, acks=all round trip.

Guards the cluster layout of devservices.kafka (three voters, one cluster id,
min.insync.replicas=2) before fault tests rely on it.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.waiting import eventually

# serial: the 3-broker cluster is a session fixture the broker fault tests share.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

PARTITIONS = 3
REPLICAS = 3
MESSAGES = 300


async def _describe(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for item in await admin.describe_topics([topic]):
            if item["topic"] == topic and item["error_code"] == 0:
                return list(item["partitions"])
        return []
    finally:
        await admin.close()


async def test_topic_is_fully_replicated_and_round_trips_with_acks_all(
    kafka_cluster_bootstrap: str, topic_name: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster_bootstrap)
    await admin.start()
    try:
        assert len((await admin.describe_cluster())["brokers"]) == REPLICAS
        response = await admin.create_topics([NewTopic(topic_name, PARTITIONS, REPLICAS)])
        assert [(t, code) for t, code, *_ in response.topic_errors] == [(topic_name, 0)]
    finally:
        await admin.close()

    # Metadata reaches the other brokers a moment after CreateTopics returns.
    partitions = await eventually(
        lambda: _describe(kafka_cluster_bootstrap, topic_name),
        lambda found: (
            len(found) == PARTITIONS
            and all(len(p["isr"]) == REPLICAS and p["leader"] >= 0 for p in found)
        ),
        what=f"{PARTITIONS} partitions with a leader and {REPLICAS} replicas in sync",
    )
    assert sorted(p["partition"] for p in partitions) == list(range(PARTITIONS))
    assert all(sorted(p["replicas"]) == [1, 2, 3] for p in partitions), partitions
    assert all(sorted(p["isr"]) == [1, 2, 3] for p in partitions), partitions
    assert len({p["leader"] for p in partitions}) > 1, "leaders should spread over brokers"

    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(MESSAGES)}
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_cluster_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [await producer.send(topic_name, value, key=key) for key, value in sent.items()]
        await producer.flush()
        written = [await f for f in futures]
    finally:
        await producer.stop()
    assert {m.partition for m in written} == set(range(PARTITIONS))

    received: dict[bytes, bytes] = {}
    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=kafka_cluster_bootstrap,
        group_id=f"{topic_name}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def fetch() -> int:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    received[record.key] = record.value
            return len(received)

        await eventually(
            fetch, lambda got: got >= MESSAGES, what=f"{MESSAGES} messages back", every=0
        )
        await consumer.commit()
    finally:
        await consumer.stop()
    assert received == sent
