"""Records deleted from the topic (retention) before they were applied: said, counted, and the
rest applied in order from the log start."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    WorkerProcess,
    committed_offsets,
    create_topic,
    end_offsets,
    make_worker,
    metric_value,
    produce_timed,
    read_metrics,
    wait_caught_up,
)
from tests.waiting import eventually

PLANET = build_spec(Planet)
PARTITIONS = 4


def planets(start: int, count: int) -> list[tuple[bytes, bytes, None]]:
    """One CREATED event per new planet ``p<start>`` .. ``p<start+count-1>``."""
    return [
        (
            f"p{i}".encode(),
            json.dumps({"planetUuid": f"p{i}", "planetName": f"n{i}"}).encode(),
            None,
        )
        for i in range(start, start + count)
    ]


async def test_records_lost_to_retention_are_counted_and_the_rest_applied_in_order(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    first = planets(0, 400)
    await produce_timed(kafka_bootstrap, topic, first)
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "retention")
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
    finally:
        assert worker.stop() == "SIGTERM"
    store = SqlStore.from_url(pg_url)
    try:
        stored = {p: o for (t, p), o in store.stored_offsets(app_id).items() if t == topic}
    finally:
        store.dispose()
    assert sum(stored.values()) == 400

    # While the worker is down, more records come and retention deletes past where it stopped.
    second = planets(400, 800)
    positions = await produce_timed(kafka_bootstrap, topic, second)
    ends = await end_offsets(kafka_bootstrap, topic)
    log_start = {p: stored[p] + (ends[p] - stored[p]) // 2 for p in range(PARTITIONS)}
    await delete_records(kafka_bootstrap, topic, log_start)
    lost = {p: log_start[p] - stored[p] for p in range(PARTITIONS)}
    assert all(n > 0 for n in lost.values())

    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        assert await lost_counts(worker, topic) == {p: float(n) for p, n in lost.items()}
    finally:
        assert worker.stop() == "SIGTERM"

    # Every record from the log start on is applied; the deleted ones are not.
    assert set(read_planets(pg_url)) == kept_planets(400, second, positions, log_start)
    log = worker.log_path.read_text()
    for p in range(PARTITIONS):
        line = (
            f"{topic}[{p}]: {lost[p]} records (offsets {stored[p]} to {log_start[p] - 1}) were "
            "deleted from the topic (retention) before they were applied"
        )
        assert log.count(line) == 1, line


async def test_a_forwarded_topic_past_its_retention_is_counted_and_the_rest_forwarded(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # A forwarded topic's progress is the group's committed offset, not one stored with data.
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    await produce_timed(kafka_bootstrap, topic, planets(0, 400))
    worker, app_id = make_worker(
        kafka_bootstrap, pg_url, topic_prefix, tmp_path, "retfwd", REPARTITION="planet"
    )
    repartition = f"{app_id}-{topic}-repartition"
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        await wait_caught_up(kafka_bootstrap, app_id, repartition, alive=worker.assert_alive)
    finally:
        assert worker.stop() == "SIGTERM"
    committed = await committed_offsets(kafka_bootstrap, app_id, topic)
    assert sum(committed.values()) == 400

    second = planets(400, 800)
    positions = await produce_timed(kafka_bootstrap, topic, second)
    ends = await end_offsets(kafka_bootstrap, topic)
    log_start = {p: committed[p] + (ends[p] - committed[p]) // 2 for p in range(PARTITIONS)}
    await delete_records(kafka_bootstrap, topic, log_start)
    lost = {p: log_start[p] - committed[p] for p in range(PARTITIONS)}
    assert all(n > 0 for n in lost.values())

    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        await wait_caught_up(kafka_bootstrap, app_id, repartition, alive=worker.assert_alive)
        assert await lost_counts(worker, topic) == {p: float(n) for p, n in lost.items()}
    finally:
        assert worker.stop() == "SIGTERM"
    assert set(read_planets(pg_url)) == kept_planets(400, second, positions, log_start)


async def delete_records(bootstrap: str, topic: str, log_start: dict[int, int]) -> None:
    """Delete every record of ``topic`` below ``log_start[p]``, as retention would."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(o) for p, o in log_start.items()}
        )
    finally:
        await admin.close()


async def lost_counts(worker: WorkerProcess, topic: str) -> dict[int, float | None]:
    """Return the worker's ``mirror_lost_records_total`` of each partition of ``topic``."""
    text = await eventually(
        lambda: read_metrics(worker),
        what="/metrics answering",
        alive=[worker],
        ignoring=(aiohttp.ClientError, TimeoutError),
    )
    return {
        p: metric_value(text, f'mirror_lost_records_total{{partition="{p}",topic="{topic}"}}')
        for p in range(PARTITIONS)
    }


def kept_planets(
    first: int,
    second: list[tuple[bytes, bytes, None]],
    positions: list[tuple[int, int, int]],
    log_start: dict[int, int],
) -> set[str]:
    """The planets a mirror ends with: the ``first`` applied before the records were deleted,
    and those of ``second`` at or after the log start."""
    kept = {f"p{i}" for i in range(first)}
    for (key, _, _), (_, partition, offset) in zip(second, positions, strict=True):
        if offset >= log_start[partition]:
            kept.add(key.decode())
    return kept
