"""Producing the bench's records: librdkafka when the bench extra is installed, else aiokafka.

The producer shares the two cores with the path it feeds (paced at up to 80,000 events/s in
the freshness runs), so its cost per record matters: confluent-kafka (librdkafka in C, pulled
in by the bench extra's Quix Streams) spends about 4 us of CPU a record here, aiokafka's
record batches about 11 us, aiokafka's ``send`` per record about 23 us. Both partition by
murmur2 of the key, as Java producers do; both are idempotent with ``acks=all``, so a retried
batch never lands after a later one (each table is checked against the produced order).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Sequence
from typing import Any, Protocol

from bench.measure import Event


class RecordWriter(Protocol):
    """Hands records to a Kafka client; ``flush`` waits until the broker has them all."""

    async def send(self, topic: str, records: Sequence[Event]) -> None:
        """Queue ``records`` (in order) for ``topic``, waiting only while the client is full."""

    async def flush(self) -> None:
        """Wait until every queued record is acknowledged; raise the first delivery error."""

    async def close(self) -> None:
        """Flush and let the client go."""


class ConfluentWriter:
    """librdkafka's producer (confluent-kafka), polled from the event loop."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self._error: Exception | None = None
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 500_000,
            }
        )

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None and self._error is None:
            self._error = RuntimeError(f"delivery failed: {error}")

    async def send(self, topic: str, records: Sequence[Event]) -> None:
        produce = self._producer.produce
        for record in records:
            while True:
                try:
                    produce(topic, record.value, record.key.encode(), on_delivery=self._delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0)
                    await asyncio.sleep(0.005)
        self._producer.poll(0)

    async def flush(self) -> None:
        while self._producer.flush(0) > 0:
            await asyncio.sleep(0.005)
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        await self.flush()


class AiokafkaWriter:
    """aiokafka, one record batch per partition per ``send`` (no per-record future)."""

    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.partitioner import DefaultPartitioner

        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            max_batch_size=256 * 1024,
        )
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._pending: list[asyncio.Future[Any]] = []
        self._started = False

    async def send(self, topic: str, records: Sequence[Event]) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        partitions = self._partitions[topic]
        batches: dict[int, Any] = {}
        for record in records:
            key = record.key.encode()
            partition = self._partitioner(key, partitions, partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self._producer.create_batch()
            if batch.append(key=key, value=record.value, timestamp=None) is None:
                await self._send_batch(batch, topic, partition)
                batch = batches[partition] = self._producer.create_batch()
                batch.append(key=key, value=record.value, timestamp=None)
        for partition, batch in batches.items():
            await self._send_batch(batch, topic, partition)

    async def _send_batch(self, batch: Any, topic: str, partition: int) -> None:
        self._pending.append(await self._producer.send_batch(batch, topic, partition=partition))
        if len(self._pending) >= 256:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)

    async def close(self) -> None:
        if self._started:
            await self.flush()
            await self._producer.stop()


def client_name() -> str:
    """Name the client :func:`open_writer` uses here."""
    return "confluent-kafka" if importlib.util.find_spec("confluent_kafka") else "aiokafka"


def open_writer(bootstrap: str) -> RecordWriter:
    """Return the cheapest producer installed: confluent-kafka, else aiokafka."""
    if client_name() == "confluent-kafka":
        return ConfluentWriter(bootstrap)
    return AiokafkaWriter(bootstrap)
