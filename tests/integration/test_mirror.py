"""End to end: a real worker process mirrors a mixed 4-partition stream into SQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support import (
    WorkerProcess,
    create_topic,
    expected_planets,
    partitions_of,
    planet_stream,
    produce,
    wait_caught_up,
    worker_env,
)


def read_planets(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT uuid, name FROM servicea_planet")).all()
    finally:
        engine.dispose()
    return {str(u): str(n) for u, n in rows}


async def test_worker_mirrors_a_mixed_stream(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    events = planet_stream(5_000, 60, poison_every=97)
    sent = await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
    assert sent == 5_000

    app_id = f"mirror-test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        worker_env(
            bootstrap=kafka_bootstrap,
            database_url=db_url,
            app_id=app_id,
            topic_prefix=topic_prefix,
            data_dir=tmp_path / "data",
        ),
        tmp_path / "worker.log",
    )
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        expected = expected_planets(events)
        assert len(expected) > 20
        assert read_planets(db_url) == expected
        log = worker.log_path.read_text()
        assert "rejected " in log and "unknown_change_type" in log
    finally:
        worker.stop()


async def test_worker_creates_its_missing_topic_with_the_configured_partitions(
    kafka_bootstrap: str, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    app_id = f"mirror-test-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap=kafka_bootstrap,
        database_url=sqlite_url,
        app_id=app_id,
        topic_prefix=topic_prefix,
        data_dir=tmp_path / "data",
    )
    env["TOPIC_PARTITIONS"] = "6"
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while await partitions_of(kafka_bootstrap, topic) != list(range(6)):
            worker.assert_alive()
            assert time.monotonic() < deadline, "the worker did not create its topic"
            await asyncio.sleep(0.2)
        events = planet_stream(300, 20, seed=11)
        await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        assert read_planets(sqlite_url) == expected_planets(events)
    finally:
        worker.stop()
