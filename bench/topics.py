"""The bench's topics: made, filled with a workload (one pass for every path's encoding), read
for their end offsets, and deleted at the end of a run so the shared broker does not collect
them (a broker holding thousands of topics slowed every path: BENCHMARKS.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.measure import Event
from bench.producer import RecordWriter, open_writer

#: Turns the bench's event into the records a path's topic gets (itself, for most paths; a
#: Debezium change event and a tombstone for a delete on Debezium input).
Encode = Callable[[Event], Sequence[Event]]
#: Records handed to the producer at a time while filling.
CHUNK = 5_000


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create ``topics``, each with ``partitions`` partitions, replication factor 1."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


async def fill(
    bootstrap: str, partitions: int, targets: Mapping[str, Encode], events: Iterable[Event]
) -> None:
    """Create each target topic and produce ``events`` to each, encoded for it, keyed by entity."""
    await create_topics(bootstrap, list(targets), partitions)
    writer = open_writer(bootstrap)
    try:
        chunk: list[Event] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= CHUNK:
                await _send(writer, targets, chunk)
                chunk = []
        await _send(writer, targets, chunk)
    finally:
        await writer.close()


async def _send(writer: RecordWriter, targets: Mapping[str, Encode], chunk: list[Event]) -> None:
    for topic, encode in targets.items():
        await writer.send(topic, [r for e in chunk for r in encode(e)])


async def create_and_fill(
    bootstrap: str, topic: str, partitions: int, events: Iterable[Event]
) -> None:
    """Create ``topic`` and produce ``events`` to it as they are."""
    await fill(bootstrap, partitions, {topic: lambda e: (e,)}, events)


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Return each partition's end offset (the next offset to be written)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def delete_topics(bootstrap: str, prefix: str) -> int:
    """Delete every topic whose name starts with ``prefix``; return how many (best effort)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            with contextlib.suppress(Exception):
                await admin.delete_topics(doomed)
        return len(doomed)
    finally:
        await admin.close()
