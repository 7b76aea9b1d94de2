"""Partitions added to a source topic under a running worker: picked up within seconds, the
cached table's changelog given as many, reads never a 404 for an entity the database has, and
a restart needs no manual step."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    Sent,
    assert_planet_reads,
    create_topic,
    end_offsets,
    expected_state,
    make_worker,
    partitions_of,
    run_cli,
    wait_caught_up,
    wait_for_metric,
    wait_ready,
    wait_stored,
)

PLANET = build_spec(Planet)


def planets(count: int, keys: int, seed: int, start: int = 0) -> list[Sent]:
    """Updates and deletes of ``keys`` planets, keyed by uuid."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        key = f"planet-{rng.randrange(keys)}"
        if rng.random() < 0.1:
            value = json.dumps({"planetUuid": key, "changeType": "DELETED"}).encode()
            out.append(Sent(key, None, key.encode(), value, 0))
        else:
            name = f"{key}-{seed}-{start + i}"
            value = json.dumps({"planetUuid": key, "planetName": name}).encode()
            out.append(Sent(key, name, key.encode(), value, 0))
    return out


async def send(
    producer: AIOKafkaProducer, topic: str, sent: list[Sent]
) -> list[tuple[int, int, int]]:
    """Send ``sent`` in order; return each record's (timestamp, partition, offset)."""
    placed = []
    for record in sent:
        stamp = int(time.time() * 1000)
        meta = await producer.send_and_wait(topic, record.value, key=record.key, timestamp_ms=stamp)
        placed.append((stamp, meta.partition, meta.offset))
    return placed


async def test_partitions_added_under_a_running_worker(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "grown")
    changelog = f"{app_id}-planet-changelog"
    store = SqlStore.from_url(pg_url)
    store.create_tables([PLANET])
    before = planets(1_500, 300, seed=1)
    after = planets(1_500, 400, seed=2, start=len(before))
    # A producer started before the partitions are added keeps the old count for minutes
    # (its metadata's age); one started after uses the new one.
    stale = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await stale.start()
    try:
        worker.start()
        positions = await send(stale, topic, before)
        await wait_stored(store, app_id, len(before), worker)
        await wait_ready(worker)

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({topic: NewPartitions(6)})
        finally:
            await admin.close()
        grown_at = time.monotonic()
        fresh = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await fresh.start()
        try:
            half = len(after) // 2
            positions += await send(fresh, topic, after[:half])
            positions += await send(stale, topic, after[half : half + 200])
            positions += await send(fresh, topic, after[half + 200 :])
        finally:
            await fresh.stop()
        sent = before + after
        assert {p for _, p, _ in positions} >= {4, 5}

        # The new partitions are read within seconds, not at the next 5-minute refresh.
        await wait_stored(store, app_id, len(sent), worker, timeout=60)
        assert time.monotonic() - grown_at < 60
        await wait_for_metric(
            worker, f'mirror_consumer_lag_records{{partition="5",topic="{topic}"}}', 0
        )
        assert sorted(await partitions_of(kafka_bootstrap, changelog)) == list(range(6))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        expected = expected_state(sent, positions)
        assert read_planets(pg_url) == expected
        counts = store.outcome_counts(app_id)
        assert sum(n for (t, _), n in counts.items() if t == topic) == len(sent), counts
        keys = sorted({s.entity for s in sent})
        await assert_planet_reads(worker.env["WEB_PORT"], expected, keys)
        # Once rebuilt, the moved entries are where reads look, and the cache matches.
        await wait_for_metric(worker, 'mirror_cache_rebuilt_entries_total{entity="planet"}', 1)
        await wait_ready(worker)
        await assert_planet_reads(worker.env["WEB_PORT"], expected, keys)
        verify = await asyncio.to_thread(run_cli, worker.env, "verify", "planet")
        assert verify.returncode == 0, verify.stdout + verify.stderr

        # A restart needs no manual step, and reads stay right.
        assert worker.stop() == "SIGTERM"
        worker.start()
        await wait_ready(worker)
        await assert_planet_reads(worker.env["WEB_PORT"], expected, keys)
        ends = await end_offsets(kafka_bootstrap, topic)
        assert store.stored_offsets(app_id) == {(topic, p): n for p, n in ends.items()}
    finally:
        await stale.stop()
        assert worker.stop() in ("SIGTERM", "exited")
        store.dispose()
