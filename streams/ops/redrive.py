"""Read and redrive dead letters (``python -m streams dlq list|redrive``).

Redriving sends a dead letter's original key and value back to its source topic after a
fix. The record carries its first position in the ``mirror-origin`` header, so its version
is the original one: if the entity changed since, the redriven event is skipped as stale
instead of overwriting newer state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from streams.apply.deadletters import (
    DLQ_HEADERS,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TIMESTAMP,
    SOURCE_TOPIC,
    headers_dict,
)
from streams.core.errors import MirrorError
from streams.core.records import ORIGIN_HEADER, Origin
from streams.kafka import aiokafka_fixes
from streams.kafka.aiokafka_fixes import send_record
from streams.kafka.broker_failures import start_client
from streams.kafka.topics import consumer_options, partitions_of
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def info(self) -> dict[str, str]:
        """Return the ``dlq.*`` headers, decoded."""
        return headers_dict(self.headers)

    @property
    def origin(self) -> Origin | None:
        """Return where the record was first produced, from its headers."""
        info = self.info
        try:
            return Origin(
                info[SOURCE_TOPIC],
                int(info[SOURCE_PARTITION]),
                int(info[SOURCE_OFFSET]),
                int(info[SOURCE_TIMESTAMP]),
            )
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command takes."""

    reason: str | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def takes(self, letter: DeadLetter) -> bool:
        """Tell whether ``letter`` is selected (offsets are source offsets, inclusive)."""
        origin = letter.origin
        if self.reason is not None and letter.info.get(REASON) != self.reason:
            return False
        if origin is None:
            return self.partition is None and self.from_offset is None and self.to_offset is None
        if self.partition is not None and origin.partition != self.partition:
            return False
        if self.from_offset is not None and origin.offset < self.from_offset:
            return False
        return self.to_offset is None or origin.offset <= self.to_offset


async def read_dead_letters(settings: Settings, topic: str) -> AsyncIterator[DeadLetter]:
    """Yield every record of ``topic`` from the beginning to its current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    aiokafka_fixes.install()  # dead letters can carry header keys that are not UTF-8
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_hosts,
        **consumer_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await start_client(settings, consumer.start(), consumer.stop, timeout=20)
    try:
        partitions = await partitions_of(settings, topic)
        if not partitions:
            raise MirrorError(f"dead-letter topic {topic!r} does not exist")
        parts = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        remaining = {tp.partition: end for tp, end in ends.items() if end > 0}
        idle = 0
        while remaining and idle < 10:  # ten empty seconds: the rest is not readable records
            batch = await consumer.getmany(timeout_ms=1000)
            idle = 0 if batch else idle + 1
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < ends[tp]:
                        yield DeadLetter(
                            tp.partition, m.offset, m.key, m.value, tuple(m.headers or ())
                        )
                    if m.offset + 1 >= ends[tp]:
                        remaining.pop(tp.partition, None)
    finally:
        await consumer.stop()


async def redrive(
    settings: Settings, dlq_topic: str, selection: Selection, *, dry_run: bool = False
) -> Counter[str]:
    """Send the selected dead letters back to their source topics; count them by reason."""
    from aiokafka import AIOKafkaProducer

    sent: Counter[str] = Counter()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_hosts,
        **settings.kafka_client_options(),
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        futures = []
        async for letter in read_dead_letters(settings, dlq_topic):
            origin = letter.origin
            if origin is None or not selection.takes(letter):
                continue
            sent[letter.info.get(REASON, "?")] += 1
            if dry_run:
                continue
            headers = [
                (k, v) for k, v in letter.headers if k not in DLQ_HEADERS and k != ORIGIN_HEADER
            ]
            headers.append((ORIGIN_HEADER, origin.header()))
            futures.append(
                await send_record(producer, origin.topic, letter.key, letter.value, headers)
            )
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()
    return sent
