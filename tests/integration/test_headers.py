"""Records whose header keys are not UTF-8: aiokafka alone cannot read them; the mirror can."""

from __future__ import annotations

import json
from pathlib import Path

import aiokafka.consumer.fetcher as fetcher
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.record.memory_records import MemoryRecords

from streams.kafka.aiokafka_fixes import RawHeaderKey, TolerantMemoryRecords, send_with_raw_headers
from tests.integration.test_mirror import read_planets
from tests.support import create_topic, make_worker, wait_caught_up

BAD_KEY = b"\xff\xfetrace"


async def produce_with_bad_header(
    bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]
) -> None:
    """Send (key, value) records, each with a header key that is not UTF-8, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            headers = [(RawHeaderKey(BAD_KEY), b"span-1"), ("plain", b"ok")]
            await (await send_with_raw_headers(producer, topic, key, value, headers))
    finally:
        await producer.stop()


async def read_headers(bootstrap: str, topic: str) -> list[list[tuple[str, bytes | None]]]:
    """Return the headers of every record of partition 0 of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        return [list(m.headers) for m in batch.get(tp, [])]
    finally:
        await consumer.stop()


async def test_aiokafka_alone_cannot_read_a_header_key_that_is_not_utf8(
    kafka_bootstrap: str, topic_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_topic(kafka_bootstrap, topic_name, partitions=1)
    await produce_with_bad_header(kafka_bootstrap, topic_name, [(b"k", b"v")])
    monkeypatch.setattr(fetcher, "MemoryRecords", MemoryRecords)  # aiokafka as shipped
    with pytest.raises(UnicodeDecodeError):
        await read_headers(kafka_bootstrap, topic_name)
    monkeypatch.setattr(fetcher, "MemoryRecords", TolerantMemoryRecords)  # the workaround
    [headers] = await read_headers(kafka_bootstrap, topic_name)
    assert [(k.encode(), v) for k, v in headers] == [(BAD_KEY, b"span-1"), (b"plain", b"ok")]


@pytest.mark.parametrize("repartition", [False, True], ids=["direct", "forwarded"])
async def test_a_header_key_that_is_not_utf8_is_mirrored_or_dead_lettered_byte_for_byte(
    kafka_bootstrap: str,
    pg_url: str,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    repartition: bool,
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=1)

    def planet(key: str) -> tuple[bytes, bytes]:
        return key.encode(), json.dumps({"planetUuid": key, "planetName": "n"}).encode()

    await produce_with_bad_header(
        kafka_bootstrap, topic, [planet("a"), (b"bad", b"not json"), planet("b")]
    )
    extra = {"REPARTITION": "planet"} if repartition else {}
    worker, app_id = make_worker(
        kafka_bootstrap, pg_url, topic_prefix, tmp_path, "headers", TOPIC_PARTITIONS="1", **extra
    )
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        if repartition:  # the forwarder wrote the keys back byte for byte
            repartitioned = f"{app_id}-{topic}-repartition"
            await wait_caught_up(kafka_bootstrap, app_id, repartitioned, alive=worker.assert_alive)
    finally:
        assert worker.stop() == "SIGTERM"
    worker.assert_exited(0)  # it ran until asked to stop, and stopped cleanly
    assert set(read_planets(pg_url)) == {"a", "b"}
    monkeypatch.setattr(fetcher, "MemoryRecords", TolerantMemoryRecords)
    [headers] = await read_headers(kafka_bootstrap, f"{topic}.dlq")
    own = [(k.encode(), v) for k, v in headers if not k.startswith("dlq.") and k != "mirror-origin"]
    assert own == [(BAD_KEY, b"span-1"), (b"plain", b"ok")]
    assert dict(headers)["dlq.reason"] == b"bad_json"
