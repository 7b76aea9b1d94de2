"""The development broker round-trips keyed messages for aiokafka 0.14.

A smoke test of the pinned Kafka (devservices.kafka.KAFKA_VERSION) against the client
Faust uses: admin CreateTopics, an idempotent acks=all producer, a consumer group that
joins, fetches and commits. If a Kafka upgrade drops a protocol version aiokafka still
sends, this fails first and says which call broke.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.waiting import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 4
MESSAGES = 400


async def test_keyed_messages_come_back_from_every_partition(
    kafka_bootstrap: str, topic_name: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])
        assert [(t, code) for t, code, *_ in response.topic_errors] == [(topic_name, 0)]
    finally:
        await admin.close()

    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(MESSAGES)}
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [await producer.send(topic_name, value, key=key) for key, value in sent.items()]
        await producer.flush()
        written = [await f for f in futures]
    finally:
        await producer.stop()
    assert {m.partition for m in written} == set(range(PARTITIONS))

    group = f"{topic_name}-group"
    received: dict[bytes, bytes] = {}
    partitions_seen: set[int] = set()
    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def fetch() -> int:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                partitions_seen.add(tp.partition)
                for record in records:
                    assert record.key is not None and record.value is not None
                    received[record.key] = record.value
            return len(received)

        await eventually(
            fetch, lambda got: got >= MESSAGES, what=f"{MESSAGES} messages back", every=0
        )
        await consumer.commit()
        committed = {
            p: await consumer.committed(TopicPartition(topic_name, p)) for p in range(PARTITIONS)
        }
    finally:
        await consumer.stop()

    assert received == sent
    assert partitions_seen == set(range(PARTITIONS))
    assert sum(offset or 0 for offset in committed.values()) == MESSAGES

    # The admin view of the group agrees with what the consumer committed.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert {tp.partition: meta.offset for tp, meta in offsets.items()} == committed
