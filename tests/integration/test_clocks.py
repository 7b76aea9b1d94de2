"""Producers' clocks disagree: partition order is the truth within a partition, and a record
stamped in the future holds its entity against other partitions for MAX_TIMESTAMP_AHEAD at most.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    create_topic,
    make_worker,
    run_cli,
    wait_for_metric,
    wait_stored,
)
from tests.waiting import eventually

AHEAD = 2.0
"""MAX_TIMESTAMP_AHEAD of the test's worker, in seconds."""


async def send(
    bootstrap: str, topic: str, records: list[tuple[int, str, str, int]]
) -> list[tuple[int, int]]:
    """Send ``(partition, uuid, name, timestamp_ms)`` planets, keyed by uuid, in order, to the
    partitions named (as producers keyed otherwise, or partitions added, put one key in
    several); return each record's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        placed = []
        for partition, key, name, stamp in records:
            value = json.dumps({"planetUuid": key, "planetName": name}).encode()
            meta = await producer.send_and_wait(
                topic, value, key=key.encode(), partition=partition, timestamp_ms=stamp
            )
            placed.append((meta.partition, meta.offset))
        return placed
    finally:
        await producer.stop()


async def test_partition_order_beats_clocks_and_a_future_stamp_holds_for_a_bound(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    worker, app_id = make_worker(
        kafka_bootstrap, pg_url, topic_prefix, tmp_path, "clocks", MAX_TIMESTAMP_AHEAD=str(AHEAD)
    )
    store = SqlStore.from_url(pg_url)
    store.create_tables([build_spec(Planet)])  # the worker does the same; the test reads first
    now = int(time.time() * 1000)
    hour = 3_600_000
    first = [
        # A create, then an update from a host whose clock is 2 s behind: the update is later.
        (0, "skewed", "created", now),
        (0, "skewed", "updated by a slow clock", now - 2_000),
        # A record stamped 50 minutes ahead, then ordinary ones in the same partition.
        (0, "ahead", "from the future", now + 50 * 60_000),
        (0, "ahead", "after it", now + 1),
        (0, "ahead", "after it again", now + 2),
        # The same key through another partition: the future record held it...
        (0, "crossed", "from the future", now + hour),
    ]
    try:
        worker.start()
        await send(kafka_bootstrap, topic, first)
        await wait_stored(store, app_id, len(first), worker)
        applied_at = time.time()
        # ... for MAX_TIMESTAMP_AHEAD at most: once that has passed, an event of another
        # partition stamped by a correct clock is newer (its version counts the future record
        # that far ahead of when it was read, no further).
        await eventually(
            time.time,
            lambda now: now >= applied_at + AHEAD + 0.5,
            what=f"MAX_TIMESTAMP_AHEAD ({AHEAD} s) passing since the first records applied",
            every=0.1,
            alive=[worker],
        )
        second = [(1, "crossed", "from another partition", int(time.time() * 1000))]
        await send(kafka_bootstrap, topic, second)
        await wait_stored(store, app_id, len(first) + len(second), worker)
        await wait_for_metric(worker, f'mirror_timestamps_ahead_total{{topic="{topic}"}}', 2.0)
        assert read_planets(pg_url) == {
            "skewed": "updated by a slow clock",
            "ahead": "after it again",
            "crossed": "from another partition",
        }
        counts = store.outcome_counts(app_id)
        assert counts == {(topic, "applied"): len(first) + len(second)}, counts
        log = worker.log_path.read_text()
        assert log.count("s ahead of this worker's clock") >= 1
        # verify names the records stamped ahead.
        verify = run_cli(worker.env, "verify", "planet")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "records were stamped further ahead than MAX_TIMESTAMP_AHEAD" in verify.stdout
        assert f"{topic}[0]@2 (key 'ahead')" in verify.stdout, verify.stdout
        assert f"{topic}[0]@5 (key 'crossed')" in verify.stdout, verify.stdout
    finally:
        assert worker.stop() == "SIGTERM"
        store.dispose()
