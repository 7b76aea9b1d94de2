"""Nothing lost, nothing applied twice, nothing stale: crashes, replays and a database outage.

Each test computes the final state independently from what it produced (the newest record of
each entity by timestamp, partition and offset decides) and compares the SQL table with it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.engine import make_url

from devservices import mariadb as dev_mariadb
from devservices import postgres as dev_postgres
from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.support import (
    Sent,
    WorkerProcess,
    chaotic_stream,
    committed_offsets,
    create_topic,
    end_offsets,
    expected_state,
    make_worker,
    metric_value,
    produce_timed,
    read_metrics,
    wait_applied,
    wait_caught_up,
    wait_for_metric,
    wait_stored,
)
from tests.waiting import watched_pause

PLANET = build_spec(Planet)
TOPIC = "planet-changed"
#: The local server of each database, which the outage test stops and starts again.
LOCAL_SERVERS: dict[str, Any] = {
    "postgresql": dev_postgres,
    "mysql": dev_mariadb,  # the URL MariaDB's server gives is mysql+pymysql://
    "mariadb": dev_mariadb,
}


def table_state(store: SqlStore) -> dict[str, str]:
    return {str(k): str(v["name"]) for k, v in store.rows(PLANET).items()}


def produce_spread(
    bootstrap: str, topic: str, sent: list[Sent], applied: asyncio.Event
) -> Coroutine[Any, Any, list[tuple[int, int, int]]]:
    """Produce ``sent`` in chunks of 500 with pauses, the rest of the first chunk only once
    the worker ``applied`` something, so that kills hit a flowing stream however slowly the
    worker started (two suites at once on two cores)."""
    return produce_timed(
        bootstrap,
        topic,
        ((s.key, s.value, s.timestamp) for s in sent),
        chunk=500,
        pause=0.6,
        hold=applied,
    )


async def kill_at_random_moments(
    worker: WorkerProcess,
    store: SqlStore,
    group: str,
    producing: asyncio.Task[Any],
    rng: random.Random,
    kills: int,
    applied: asyncio.Event,
) -> int:
    """SIGKILL ``worker`` ``kills`` times, 2 to 5 s apart from its first applied batch on,
    starting it again each time; return how many kills came while records were still produced
    and some were applied.

    Each kill must find the worker running and end it by SIGKILL: a worker that exited on its
    own meanwhile (the recovery watchdog's status 3, a crash) fails the test with its exit
    status and log tail, instead of being started again as if this loop had killed it.

    The first kill waits for the first applied batch (a condition, not a time): a worker killed
    before it ever applied anything, and killed again at each start while the group still waits
    for the dead one's session to expire, would test nothing.
    """
    await wait_stored(store, group, 1, worker)
    applied.set()  # the producer sends the rest now
    mid_stream = 0
    for _ in range(kills):
        # A random moment: this pause is the chaos, not a wait for a condition. The worker is
        # watched meanwhile, so one that exits on its own fails here, with its status.
        await watched_pause(rng.uniform(2.0, 5.0), alive=[worker])
        progress = sum((await asyncio.to_thread(store.stored_offsets, group)).values())
        if progress > 0 and not producing.done():
            mid_stream += 1
        worker.kill()  # fails unless the worker ran until this SIGKILL ended it
        worker.start()
    return mid_stream


@pytest.fixture
def store(server_db_url: str) -> Iterator[SqlStore]:
    store = SqlStore.from_url(server_db_url)
    store.create_tables([PLANET])  # the worker does the same; the test may read first
    yield store
    store.dispose()


def eo_worker(
    kafka_bootstrap: str, db_url: str, prefix: str, tmp_path: Path, **extra: str
) -> tuple[WorkerProcess, str]:
    """A worker whose killed members leave the group after 6 s (Kafka's minimum)."""
    return make_worker(
        kafka_bootstrap,
        db_url,
        prefix,
        tmp_path,
        "eo",
        SESSION_TIMEOUT="6",
        BATCH_SIZE="500",
        **extra,
    )


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing_and_applies_nothing_twice(
    kafka_bootstrap: str, server_db_url: str, store: SqlStore, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}{TOPIC}"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(20_000, 400, seed=2026)
    worker, app_id = eo_worker(kafka_bootstrap, server_db_url, topic_prefix, tmp_path)
    rng = random.Random(99)
    worker.start()
    applied = asyncio.Event()
    producing = asyncio.create_task(produce_spread(kafka_bootstrap, topic, sent, applied))
    try:
        kills_mid_stream = await kill_at_random_moments(
            worker, store, app_id, producing, rng, kills=6, applied=applied
        )
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
        # The last start ran to the end and stops when asked.
        assert worker.stop() == "SIGTERM"
    finally:
        producing.cancel()
        worker.stop()
    assert kills_mid_stream >= 3, f"only {kills_mid_stream} kills hit a flowing stream"


@pytest.mark.slow
@pytest.mark.parametrize("server_db_url", ["postgresql"], indirect=True)  # the path, not the store
async def test_sigkill_while_forwarding_loses_nothing_and_applies_nothing_twice(
    kafka_bootstrap: str, server_db_url: str, store: SqlStore, topic_prefix: str, tmp_path: Path
) -> None:
    # The forwarded path: a kill between a batch's forwarding and its offsets forwards some
    # records twice; each copy carries its first position and is skipped where it is applied.
    topic = f"{topic_prefix}{TOPIC}"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(12_000, 300, seed=7, foreign_keys=True)
    worker, app_id = eo_worker(
        kafka_bootstrap, server_db_url, topic_prefix, tmp_path, REPARTITION="planet"
    )
    repartition = f"{app_id}-{topic}-repartition"
    rng = random.Random(5)
    worker.start()
    applied = asyncio.Event()
    producing = asyncio.create_task(produce_spread(kafka_bootstrap, topic, sent, applied))
    try:
        kills_mid_stream = await kill_at_random_moments(
            worker, store, app_id, producing, rng, kills=5, applied=applied
        )
        positions = await producing
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        forwarded = await end_offsets(kafka_bootstrap, repartition)
        assert sum(forwarded.values()) >= len(sent)  # every record, some twice
        await wait_applied(store, app_id, repartition, forwarded, worker)
        assert table_state(store) == expected_state(sent, positions)
        counts = store.outcome_counts(app_id)
        # One outcome per record of the repartition topic, copies included.
        assert sum(n for (t, _), n in counts.items() if t == repartition) == sum(
            forwarded.values()
        ), counts
        assert counts.get((repartition, "rejected"), 0) == 0
        await wait_caught_up(kafka_bootstrap, app_id, repartition, alive=worker.assert_alive)
        # The last start ran to the end and stops when asked.
        assert worker.stop() == "SIGTERM"
    finally:
        producing.cancel()
        worker.stop()
    assert kills_mid_stream >= 2, f"only {kills_mid_stream} kills hit a flowing stream"


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


# On MariaDB a replay follows each SIGKILL of the test above.
@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_replaying_from_the_beginning_changes_nothing(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}{TOPIC}"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(3_000, 100, seed=7)
    positions = await produce_timed(
        kafka_bootstrap, topic, ((s.key, s.value, s.timestamp) for s in sent)
    )
    worker, app_id = eo_worker(kafka_bootstrap, db_url, topic_prefix, tmp_path)
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
@pytest.mark.serial  # kills the database server every test shares
async def test_a_database_outage_mid_stream_holds_progress_and_loses_nothing(
    kafka_bootstrap: str,
    server_db_url: str,
    store: SqlStore,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    server = LOCAL_SERVERS[make_url(server_db_url).get_backend_name()]
    if make_url(server_db_url).port != server.DEFAULT_PORT:
        pytest.fail("the outage test stops the local database server; unset its URL variable")
    topic = f"{topic_prefix}{TOPIC}"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(8_000, 200, seed=5)
    worker, app_id = eo_worker(kafka_bootstrap, server_db_url, topic_prefix, tmp_path)
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
        await wait_stored(store, app_id, 1, worker)
        store.dispose()
        server.kill()
        outage_started = time.monotonic()
        # Wait until the worker has noticed and is retrying, then keep the database down.
        await wait_for_metric(worker, 'mirror_batch_retries_total{step="apply"}', 1, timeout=60)
        await watched_pause(5 - (time.monotonic() - outage_started), alive=[worker])
        server.start()
        positions = await producing
        ends = await end_offsets(kafka_bootstrap, topic)
        await wait_applied(store, app_id, topic, ends, worker)
        assert table_state(store) == expected_state(sent, positions)
        assert sum(store.outcome_counts(app_id).values()) == len(sent)
        # Every failure was passing: no batch was failed for good (its partition held 60 s).
        metrics = await read_metrics(worker)
        failed = metric_value(metrics, 'mirror_batch_failures_total{entity="planet"}')
        assert not failed, f"{failed} batches failed for good during the outage"
        # The process started before the outage rode it out: it still runs, and stops when asked.
        worker.assert_alive()
        assert worker.stop() == "SIGTERM"
    finally:
        producing.cancel()
        if not server.is_running():
            server.start()
        worker.stop()
