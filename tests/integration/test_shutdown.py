"""SIGTERM stops a worker within SHUTDOWN_TIMEOUT whatever its batches do; nothing is lost."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.integration.test_mirror import read_planets
from tests.support import create_topic, make_worker, produce, wait_caught_up
from tests.waiting import DEADLINE, eventually

SHUTDOWN_TIMEOUT = 5.0


async def wait_blocked_on_lock(pg_url: str, timeout: float = DEADLINE) -> None:
    """Wait until some session of the test's database waits on a lock (the worker's batch)."""
    engine = create_engine(pg_url)
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    def waiting() -> int:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    try:
        await eventually(
            waiting, what="a session waiting on the lock (a batch)", timeout=timeout, every=0.1
        )
    finally:
        engine.dispose()


async def test_sigterm_stops_a_worker_whose_batch_waits_on_the_database(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=2)

    def planets(start: int, count: int) -> list[tuple[bytes, bytes]]:
        return [
            (f"p{i}".encode(), json.dumps({"planetUuid": f"p{i}", "planetName": "n"}).encode())
            for i in range(start, start + count)
        ]

    worker, app_id = make_worker(
        kafka_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "shutdown",
        TOPIC_PARTITIONS="2",
        SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
    )
    worker.start()
    blocker = create_engine(pg_url)
    try:
        await produce(kafka_bootstrap, topic, planets(0, 50))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        with blocker.connect() as conn:
            # Another session holds the bookkeeping table: the next batch waits in PostgreSQL,
            # inside a thread that no cancellation reaches.
            conn.execute(text("LOCK TABLE mirror_offsets IN ACCESS EXCLUSIVE MODE"))
            await produce(kafka_bootstrap, topic, planets(50, 50))
            await wait_blocked_on_lock(pg_url)
            started = time.monotonic()
            assert worker.stop(timeout=SHUTDOWN_TIMEOUT + 20) == "SIGTERM"
            took = time.monotonic() - started
            conn.rollback()
        assert took < SHUTDOWN_TIMEOUT + 10, took
        assert "did not stop within SHUTDOWN_TIMEOUT" in worker.log_path.read_text()
        # What was not committed is read again.
        worker.start()
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        assert set(read_planets(pg_url)) == {f"p{i}" for i in range(100)}
    finally:
        blocker.dispose()
        worker.stop()
