"""Poison events: every kind goes to the dead-letter topic with its reason; the table is exact."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from models.store import SqlStore
from streams.apply.deadletters import headers_dict
from tests.integration.test_mirror import read_planets
from tests.support import (
    WorkerProcess,
    create_topic,
    end_offsets,
    make_worker,
    partitions_of,
    produce_timed,
    wait_caught_up,
    wait_for_metric,
)
from tests.waiting import eventually

#: Kinds of poison: (label, the reason it is rejected with, its record's key and value).
POISON: list[tuple[str, str, Callable[[str], tuple[bytes | None, bytes | None]]]] = [
    ("bad_encoding", "bad_encoding", lambda key: (key.encode(), b"\xff\xfe\x00 not utf-8")),
    (
        "bad_json",
        "bad_json",
        lambda key: (key.encode(), b'{"planetUuid": "' + key.encode() + b'", oops'),
    ),
    ("not_an_object", "not_an_object", lambda key: (key.encode(), b'["' + key.encode() + b'"]')),
    ("missing_key", "missing_key", lambda key: (key.encode(), _json({"planetName": "nameless"}))),
    (
        "unknown_change_type",
        "unknown_change_type",
        lambda key: (
            key.encode(),
            _json({"planetUuid": key, "planetName": "x", "changeType": "ARCHIVED"}),
        ),
    ),
    # A row the table would refuse (name is NOT NULL), caught before any SQL.
    (
        "no_name",
        "invalid_row",
        lambda key: (key.encode(), _json({"planetUuid": key, "changeType": "CREATED"})),
    ),
    # Values no text column can hold (PostgreSQL refuses NUL): caught before any SQL, always.
    (
        "nul_in_name",
        "invalid_row",
        lambda key: (key.encode(), _json({"planetUuid": key, "planetName": "a\x00b"})),
    ),
    (
        "object_as_name",
        "invalid_row",
        lambda key: (key.encode(), _json({"planetUuid": key, "planetName": {"a": 1}})),
    ),
    (
        "nul_in_key",
        "bad_key",
        lambda key: (key.encode(), _json({"planetUuid": "bad\x00" + key, "planetName": "x"})),
    ),
    ("tombstone_nul_key", "bad_key", lambda key: (b"a\x00" + key.encode(), None)),
]
REASON_OF = {label: reason for label, reason, _ in POISON}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


async def read_all(
    bootstrap: str, topic: str
) -> list[tuple[bytes | None, bytes | None, dict[str, str]]]:
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    out = []
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)

        async def read_more() -> int:
            batch = await consumer.getmany(timeout_ms=2000)
            for messages in batch.values():
                for m in messages:
                    out.append((m.key, m.value, headers_dict(list(m.headers))))
            return len(out)

        total = sum(ends.values())
        await eventually(
            read_more, lambda read: read >= total, what=f"the {total} records of {topic}", every=0
        )
    finally:
        await consumer.stop()
    return out


async def test_poison_events_are_dead_lettered_with_their_reason(
    kafka_bootstrap: str, server_db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    rng = random.Random(17)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(300)]
    items: list[tuple[bytes | None, bytes | None, int | None]] = []
    expected: dict[str, str] = {}
    makers = {label: make for label, _, make in POISON}
    kinds = [label for label, _, _ in POISON for _ in range(500)]
    good = 4_000
    plan = ["good"] * good + kinds
    rng.shuffle(plan)
    for i, kind in enumerate(plan):
        key = rng.choice(keys)
        if kind == "good":
            items.append((key.encode(), _json({"planetUuid": key, "planetName": f"n{i}"}), None))
        else:
            items.append((*makers[kind](key), None))
    positions = await produce_timed(kafka_bootstrap, topic, items)
    # Expected state: good events in order per key (keyed by entity: one partition each).
    for (key, value, _), kind in zip(items, plan, strict=True):
        if kind == "good":
            assert key is not None and value is not None
            expected[key.decode()] = json.loads(value)["planetName"]
    worker, app_id = make_worker(kafka_bootstrap, server_db_url, topic_prefix, tmp_path, "poison")
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
    finally:
        stopped = worker.stop()
    assert stopped == "SIGTERM"  # a poison pill never keeps the worker from stopping
    assert read_planets(server_db_url) == expected
    store = SqlStore.from_url(server_db_url)
    try:
        counts = store.outcome_counts(app_id)
    finally:
        store.dispose()
    assert sum(counts.values()) == len(items)  # one outcome per record, counted once
    assert counts[(topic, "rejected")] == len(kinds)

    dlq = f"{topic}.dlq"
    assert await partitions_of(kafka_bootstrap, dlq)
    letters = await read_all(kafka_bootstrap, dlq)
    by_position = {
        (int(h["dlq.source.partition"]), int(h["dlq.source.offset"])): (key, value, h)
        for key, value, h in letters
    }
    assert len(by_position) == len(letters)  # no poison event dead-lettered twice
    reasons: dict[str, int] = {}
    for (key, value, _), kind, (_, partition, offset) in zip(items, plan, positions, strict=True):
        if kind == "good":
            assert (partition, offset) not in by_position
            continue
        dl_key, dl_value, headers = by_position[(partition, offset)]
        assert (dl_key, dl_value) == (key, value)  # original bytes, unchanged
        assert headers["dlq.reason"] == REASON_OF[kind], (kind, headers)
        assert headers["dlq.source.topic"] == topic
        assert headers["dlq.detail"]
        assert int(headers["dlq.source.timestamp"]) > 0
        reasons[kind] = reasons.get(kind, 0) + 1
    assert reasons == {label: 500 for label, _, _ in POISON}  # every pill, every time
    assert len(letters) == len(kinds)
    assert "Traceback" not in worker.log_path.read_text()


async def test_a_dead_letter_the_broker_refuses_holds_only_its_partition(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:

    topic = f"{topic_prefix}planet-changed"
    dlq = f"{topic}.dlq"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    # Dead letters cannot be written: the topic takes no record over 10 bytes.
    await create_limited_topic(kafka_bootstrap, dlq, 2, max_bytes=10)
    items = [
        (f"k{i}".encode(), json.dumps({"planetUuid": f"k{i}", "planetName": "n"}).encode(), None)
        for i in range(50)
    ]
    items.append((b"bad", b"not json", None))
    items += [
        (f"m{i}".encode(), json.dumps({"planetUuid": f"m{i}", "planetName": "n"}).encode(), None)
        for i in range(50)
    ]
    positions = await produce_timed(kafka_bootstrap, topic, items)
    bad_partition, bad_offset = positions[50][1], positions[50][2]
    # While held: every record of the other partition, and those before the bad one of its own.
    expected_while_held = {
        key.decode()
        for (key, _, _), (_, partition, offset) in zip(items, positions, strict=True)
        if key != b"bad" and (partition != bad_partition or offset < bad_offset)
    }
    worker, app_id = make_worker(
        kafka_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "dlqfail",
        BATCH_SIZE="20",
        TOPIC_PARTITIONS="2",
    )
    worker.start()
    try:
        labels = f'partition="{bad_partition}",reason="dead_letter",topic="{topic}"'
        await wait_for_metric(worker, f"mirror_held_partitions{{{labels}}}", 1.0)
        await wait_for_metric(
            worker,
            f'mirror_dead_letter_failures_total{{partition="{bad_partition}",topic="{topic}"}}',
            1.0,
        )
        await wait_rows(pg_url, expected_while_held, worker)
        # The fix: the topic takes ordinary records again.
        await set_max_message_bytes(kafka_bootstrap, dlq, 1048588)
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        assert len(read_planets(pg_url)) == 100
        letters = await read_all(kafka_bootstrap, dlq)
        assert [(k, v, h["dlq.reason"]) for k, v, h in letters] == [
            (b"bad", b"not json", "bad_json")
        ]
        # The same process held the partition and went on after the fix: it never exited.
        assert worker.stop() == "SIGTERM"
        worker.assert_exited(0)
    finally:
        worker.stop()


async def test_a_record_its_repartition_topic_refuses_holds_only_its_partition(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # Before: the forwarder retried such a record forever, and the partitions with it.

    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    worker, app_id = make_worker(
        kafka_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "fwdfail",
        BATCH_SIZE="20",
        TOPIC_PARTITIONS="2",
        REPARTITION="planet",
    )
    repartition = f"{app_id}-{topic}-repartition"
    # The repartition topic takes no record over 4 KB; its source takes 1 MB.
    await create_limited_topic(kafka_bootstrap, repartition, 2, max_bytes=4096)

    def planet(key: str, **extra: str) -> tuple[bytes, bytes, None]:
        return (
            b"other-" + key.encode(),
            _json({"planetUuid": key, "planetName": "n", **extra}),
            None,
        )

    items = [planet(f"k{i}") for i in range(50)]
    items.append(planet("big", padding="x" * 20_000))  # a valid event, too large to forward
    items += [planet(f"m{i}") for i in range(50)]
    positions = await produce_timed(kafka_bootstrap, topic, items)
    bad_partition, bad_offset = positions[50][1], positions[50][2]
    expected_while_held = {
        json.loads(value)["planetUuid"]
        for (_, value, _), (_, partition, offset) in zip(items, positions, strict=True)
        if partition != bad_partition or offset < bad_offset
    }
    worker.start()
    try:
        labels = f'partition="{bad_partition}",reason="forward",topic="{topic}"'
        await wait_for_metric(worker, f"mirror_held_partitions{{{labels}}}", 1.0)
        await wait_for_metric(
            worker,
            f'mirror_forward_failures_total{{partition="{bad_partition}",topic="{topic}"}}',
            1.0,
        )
        await wait_rows(pg_url, expected_while_held, worker)
        # The fix: the repartition topic takes what its source takes.
        await set_max_message_bytes(kafka_bootstrap, repartition, 1048588)
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        await wait_caught_up(kafka_bootstrap, app_id, repartition, alive=worker.assert_alive)
        assert set(read_planets(pg_url)) == {json.loads(v)["planetUuid"] for _, v, _ in items}
        worker.assert_alive()  # the same process held the partition and went on after the fix
    finally:
        assert worker.stop() == "SIGTERM"
    worker.assert_exited(0)


async def create_limited_topic(bootstrap: str, topic: str, partitions: int, max_bytes: int) -> None:
    """Create ``topic`` taking no record (batch) over ``max_bytes``."""
    await create_topic(bootstrap, topic, partitions, configs={"max.message.bytes": str(max_bytes)})


async def set_max_message_bytes(bootstrap: str, topic: str, max_bytes: int) -> None:
    """Change the largest record (batch) ``topic`` takes."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(max_bytes)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


async def wait_rows(pg_url: str, expected: set[str], worker: WorkerProcess) -> None:
    """Wait until the planet table holds exactly ``expected`` keys."""

    def differences() -> dict[str, set[str]]:
        rows = set(read_planets(pg_url))
        return {"missing": expected - rows, "extra": rows - expected}

    await eventually(
        differences,
        lambda differ: not differ["missing"] and not differ["extra"],
        what=f"the planet table holding exactly {len(expected)} keys",
        alive=[worker],
    )


async def test_a_rejected_record_as_large_as_its_topic_allows_is_dead_lettered(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    from aiokafka import AIOKafkaProducer

    topic = f"{topic_prefix}planet-changed"
    await create_limited_topic(kafka_bootstrap, topic, 2, max_bytes=20 * 1024 * 1024)
    huge = b"x" * (5 * 1024 * 1024)  # not JSON
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        max_request_size=21 * 1024 * 1024,
    )
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(
                topic, _json({"planetUuid": f"a{i}", "planetName": "n"}), key=f"a{i}".encode()
            )
        await producer.send_and_wait(topic, huge, key=b"huge")
        for i in range(20):
            await producer.send_and_wait(
                topic, _json({"planetUuid": f"b{i}", "planetName": "n"}), key=f"b{i}".encode()
            )
    finally:
        await producer.stop()
    worker, app_id = make_worker(
        kafka_bootstrap, pg_url, topic_prefix, tmp_path, "huge", TOPIC_PARTITIONS="2"
    )
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
    finally:
        assert worker.stop() == "SIGTERM"
    assert set(read_planets(pg_url)) == {f"a{i}" for i in range(20)} | {f"b{i}" for i in range(20)}
    letters = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert [(k, v == huge, h["dlq.reason"]) for k, v, h in letters] == [(b"huge", True, "bad_json")]
