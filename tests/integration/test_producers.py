"""An idempotent producer whose sequence numbers no longer match the broker's is made again.

aiokafka, like the Java client, treats ``OutOfOrderSequenceNumber`` as fatal: once a partition
answers it, every later batch of that producer to the partition fails the same way, so a
changelog writer that only retried would fail forever (seen after a broker restart:
``streams/kafka/producers.py``). Here the gap is made on purpose, on the real broker, by skipping
sequence numbers of a partition; the first test shows aiokafka's behaviour, the second that the
changelog writer (``tables/cache.py``) replaces its producer and its retry goes through.
"""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import OutOfOrderSequenceNumber

from streams.settings import Settings
from tables.cache import ChangelogWriter, Entry
from tests.support import create_topic, read_latest


def skip_sequence_numbers(producer: AIOKafkaProducer, topic: str, partition: int) -> None:
    """Make this producer's next batch to the partition leave a gap, as a lost batch would."""
    producer._txn_manager.increment_sequence_number(TopicPartition(topic, partition), 5)  # type: ignore[union-attr]


async def test_after_a_sequence_gap_aiokafka_fails_every_later_batch(
    kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, partitions=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic_name, b"first", partition=0)
        skip_sequence_numbers(producer, topic_name, 0)
        for _ in range(2):  # and again: the producer does not recover
            with pytest.raises(OutOfOrderSequenceNumber):
                await producer.send_and_wait(topic_name, b"lost", partition=0)
    finally:
        await producer.stop()


async def test_the_changelog_writer_replaces_a_producer_broken_by_a_sequence_gap(
    kafka_bootstrap: str, topic_name: str
) -> None:
    await create_topic(kafka_bootstrap, topic_name, partitions=1)
    writer = ChangelogWriter(Settings.from_env({"KAFKA_BROKER": f"kafka://{kafka_bootstrap}"}))
    try:
        await writer.write(topic_name, [Entry(b"a", b"1", 0)])
        skip_sequence_numbers(await writer._producer.get(), topic_name, 0)
        with pytest.raises(OutOfOrderSequenceNumber):
            await writer.write(topic_name, [Entry(b"a", b"2", 0)])
        # The caller retries (the batch lane does, with backoff): a new producer takes it.
        await writer.write(topic_name, [Entry(b"a", b"3", 0), Entry(b"b", b"4", 0)])
    finally:
        await writer.close()
    assert await read_latest(kafka_bootstrap, topic_name) == {b"a": b"3", b"b": b"4"}
