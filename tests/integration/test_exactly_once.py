"""Nothing lost, nothing applied twice, nothing stale: crashes, replays and a database outage.

Each test computes the final state independently from what it produced (the newest record of
each entity by timestamp, partition and offset decides) and compares the SQL table with it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devservices import postgres as dev_postgres
from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.support import (
    WorkerProcess,
    committed_offsets,
    create_topic,
    end_offsets,
    produce_timed,
    wait_caught_up,
    worker_env,
)

PLANET = build_spec(Planet)
TOPIC = "planet-changed"


@dataclass(frozen=True)
class Sent:
    """One produced record and what it means for its entity."""

    entity: str
    name: str | None  # None: this record deletes the entity (DELETED or Kafka tombstone)
    key: bytes | None
    value: bytes | None
    timestamp: int


def chaotic_stream(count: int, entities: int, seed: int) -> list[Sent]:
    """Creates, updates, deletes, duplicates, late (older) events, tombstones, un-keyed."""
    rng = random.Random(seed)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(entities)]
    base = int(time.time() * 1000) - 3_600_000
    clock = 0
    out: list[Sent] = []
    while len(out) < count:
        clock += rng.randint(1, 3)
        entity = rng.choice(keys)
        roll = rng.random()
        ts = base + clock
        if roll < 0.05 and out:  # a duplicate of an earlier record, sent again
            out.append(rng.choice(out))
            continue
        if roll < 0.12:  # a late event: its timestamp is older than what came before
            ts = base + max(0, clock - rng.randint(5, 400))
        key: bytes | None = entity.encode()
        if rng.random() < 0.1:
            key = None  # un-keyed: lands on any partition
        kind = rng.random()
        if kind < 0.05 and key is not None:
            out.append(Sent(entity, None, key, None, ts))  # Kafka tombstone
            continue
        if kind < 0.15:
            body: dict[str, Any] = {"planetUuid": entity, "changeType": "DELETED"}
            name = None
        else:
            name = f"n{len(out)}"
            change = rng.choice(["CREATED", "UPDATED", "UPDATED", "UPDATED", None])
            body = {"planetUuid": entity, "planetName": name, "population": rng.random()}
            if change:
                body["changeType"] = change
        out.append(Sent(entity, name, key, json.dumps(body).encode(), ts))
    return out


def expected_state(sent: list[Sent], positions: list[tuple[int, int, int]]) -> dict[str, str]:
    """The newest record per entity by (timestamp, partition, offset) decides its state."""
    newest: dict[str, tuple[tuple[int, int, int], str | None]] = {}
    for record, position in zip(sent, positions, strict=True):
        if record.entity not in newest or position > newest[record.entity][0]:
            newest[record.entity] = (position, record.name)
    return {k: name for k, (_, name) in newest.items() if name is not None}


def table_state(store: SqlStore) -> dict[str, str]:
    return {str(k): str(v["name"]) for k, v in store.rows(PLANET).items()}


async def wait_applied(
    store: SqlStore,
    group: str,
    topic: str,
    ends: dict[int, int],
    worker: WorkerProcess,
    timeout: float = 240.0,
) -> None:
    """Wait until the offsets stored with the data reach the end of every partition."""
    deadline = time.monotonic() + timeout
    stored: dict[tuple[str, int], int] = {}
    while time.monotonic() < deadline:
        worker.assert_alive()
        stored = await asyncio.to_thread(store.stored_offsets, group)
        if all(stored.get((topic, p), 0) >= end for p, end in ends.items()):
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"not applied: ends {ends}, stored {stored}\n{worker.tail()}")


@pytest.fixture
def store(pg_url: str) -> Iterator[SqlStore]:
    store = SqlStore.from_url(pg_url)
    store.create_tables([PLANET])  # the worker does the same; the test may read first
    yield store
    store.dispose()


def make_worker(
    kafka_bootstrap: str, db_url: str, prefix: str, tmp_path: Path, **extra: str
) -> tuple[WorkerProcess, str]:
    app_id = f"eo-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap=kafka_bootstrap,
        database_url=db_url,
        app_id=app_id,
        topic_prefix=prefix,
        data_dir=tmp_path / "data",
        SESSION_TIMEOUT="6",
        BATCH_SIZE="500",
        **extra,
    )
    return WorkerProcess(env, tmp_path / "worker.log"), app_id


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing_and_applies_nothing_twice(
    kafka_bootstrap: str, pg_url: str, store: SqlStore, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}{TOPIC}"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(20_000, 400, seed=2026)
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path)
    rng = random.Random(99)
    worker.start()
    producing = asyncio.create_task(
        produce_timed(
            kafka_bootstrap,
            topic,
            ((s.key, s.value, s.timestamp) for s in sent),
            chunk=500,
            pause=0.6,
        )
    )
    kills_mid_stream = 0
    try:
        for _ in range(6):
            # A random moment: this sleep is the chaos, not a wait for a condition.
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            progress = sum((await asyncio.to_thread(store.stored_offsets, app_id)).values())
            if progress > 0 and not producing.done():
                kills_mid_stream += 1
            worker.kill()
            worker.start()
        positions = await producing
        ends = await end_offsets(kafka_bootstrap, topic)
        assert sum(ends.values()) == len(sent)
        await wait_applied(store, app_id, topic, ends, worker)
        assert table_state(store) == expected_state(sent, positions)
        counts = store.outcome_counts(app_id)
        assert sum(counts.values()) == len(sent), counts
        assert counts.get((topic, "rejected"), 0) == 0
        assert counts[(topic, "skipped")] > 0  # duplicates and late events were skipped
        # Offsets are acknowledged to Kafka too, after the commits that hold them.
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
    finally:
        producing.cancel()
        worker.stop()
    assert worker.starts == 7
    assert kills_mid_stream >= 3, f"only {kills_mid_stream} kills hit a flowing stream"


async def reset_group_to_beginning(bootstrap: str, group: str, topic: str) -> None:
    """Commit offset 0 on every partition for ``group`` (the group must be empty)."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        await consumer.commit({tp: 0 for tp in parts})
    finally:
        await consumer.stop()


async def test_replaying_from_the_beginning_changes_nothing(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}{TOPIC}"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(3_000, 100, seed=7)
    positions = await produce_timed(
        kafka_bootstrap, topic, ((s.key, s.value, s.timestamp) for s in sent)
    )
    worker, app_id = make_worker(kafka_bootstrap, db_url, topic_prefix, tmp_path)
    store = SqlStore.from_url(db_url)
    try:
        worker.start()
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        worker.stop()
        before = store.rows(PLANET)
        counts = store.outcome_counts(app_id)
        assert table_state(store) == expected_state(sent, positions)

        await reset_group_to_beginning(kafka_bootstrap, app_id, topic)
        assert set((await committed_offsets(kafka_bootstrap, app_id, topic)).values()) == {0}
        worker.start()
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        worker.stop()
        after = store.rows(PLANET)
        assert after == before  # row by row, bookkeeping columns included
        assert store.outcome_counts(app_id) == counts
    finally:
        worker.stop()
        store.dispose()


@pytest.mark.slow
async def test_a_database_outage_mid_stream_holds_progress_and_loses_nothing(
    kafka_bootstrap: str,
    pg_server_url: str,
    pg_url: str,
    store: SqlStore,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    if not pg_server_url.startswith("postgresql+psycopg2://mirror:mirror@127.0.0.1:"):
        pytest.fail("the outage test stops the local PostgreSQL; unset DATABASE_URL")
    topic = f"{topic_prefix}{TOPIC}"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(8_000, 200, seed=5)
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path)
    worker.start()
    producing = asyncio.create_task(
        produce_timed(
            kafka_bootstrap,
            topic,
            ((s.key, s.value, s.timestamp) for s in sent),
            chunk=500,
            pause=0.5,
        )
    )
    try:
        deadline = time.monotonic() + 120
        while sum((await asyncio.to_thread(store.stored_offsets, app_id)).values()) == 0:
            worker.assert_alive()
            assert time.monotonic() < deadline, worker.tail()
            await asyncio.sleep(0.2)
        store.dispose()
        dev_postgres.kill()
        outage_started = time.monotonic()
        # Wait until the worker has noticed and is retrying, then keep the database down.
        while "retrying in" not in worker.log_path.read_text(errors="replace"):
            worker.assert_alive()
            assert time.monotonic() - outage_started < 60, worker.tail()
            await asyncio.sleep(0.2)
        while time.monotonic() - outage_started < 5:
            worker.assert_alive()
            await asyncio.sleep(0.2)
        dev_postgres.start()
        positions = await producing
        ends = await end_offsets(kafka_bootstrap, topic)
        await wait_applied(store, app_id, topic, ends, worker)
        worker.assert_alive()
        assert worker.starts == 1  # the same process rode out the outage
        assert table_state(store) == expected_state(sent, positions)
        assert sum(store.outcome_counts(app_id).values()) == len(sent)
    finally:
        producing.cancel()
        if not dev_postgres.is_running():
            dev_postgres.start()
        worker.stop()
