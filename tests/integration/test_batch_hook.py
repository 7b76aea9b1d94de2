"""A model's ``on_batch`` hook writes in the batch's transaction, once per change.

``tests/models/audited_planet.py`` appends each batch's written rows and deleted keys to an
audit table. While its switch is on the hook raises: nothing of those batches commits, and
they are retried until it succeeds. Then a SIGKILL mid-stream and a restart: every event's
write is audited exactly once (replays write nothing new), and the audit's last entry of
each key is the table's state. On SQLite and PostgreSQL, through the real broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from models.store import SqlStore
from tests.support import (
    create_topic,
    expected_planets,
    make_worker,
    planet_stream,
    produce,
    wait_caught_up,
    wait_stored,
)
from tests.waiting import eventually


def make_audit_tables(db_url: str) -> None:
    engine = create_engine(db_url)
    serial = {
        "sqlite": "INTEGER PRIMARY KEY",
        "postgresql": "BIGSERIAL PRIMARY KEY",
    }.get(make_url(db_url).get_backend_name(), "BIGINT AUTO_INCREMENT PRIMARY KEY")
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"CREATE TABLE planet_audit (seq {serial}, uuid VARCHAR(64) NOT NULL, "
                    "name VARCHAR(255), deleted INTEGER NOT NULL)"
                )
            )
            conn.execute(text("CREATE TABLE audit_switch (off_since INTEGER)"))
            conn.execute(text("INSERT INTO audit_switch VALUES (1)"))
    finally:
        engine.dispose()


def query(db_url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


async def test_a_batch_hook_commits_with_its_batch_once_and_is_retried_while_it_fails(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    make_audit_tables(db_url)
    attempts = tmp_path / "hook-attempts.txt"
    worker, app_id = make_worker(
        kafka_bootstrap,
        db_url,
        topic_prefix,
        tmp_path,
        "hook",
        ENTITY_MODULES="tests.models.audited_planet",
        AUDIT_ATTEMPTS_FILE=str(attempts),
        BATCH_SIZE="200",
        SESSION_TIMEOUT="6",
    )
    events = planet_stream(1_200, 150, seed=5)
    first, second = events[:600], events[600:]
    store = SqlStore.from_url(db_url)
    worker.start()
    try:
        await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in first))
        # The hook fails: its batches are tried again and again, and nothing commits.
        await eventually(
            lambda: attempts.read_text().splitlines() if attempts.exists() else [],
            lambda tried: len(tried) >= 3,
            what="three attempts of the failing hook",
            alive=[worker],
        )
        assert query(db_url, "SELECT count(*) FROM audited_planet") == [(0,)]
        assert query(db_url, "SELECT count(*) FROM planet_audit") == [(0,)]
        query(db_url, "DELETE FROM audit_switch")
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)

        # A crash while the second half is applied, and a restart.
        producing = asyncio.create_task(
            produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in second))
        )
        await wait_stored(store, app_id, 800, worker)
        worker.kill()
        await producing
        worker.start()
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
    finally:
        worker.stop()
        store.dispose()

    table = dict(query(db_url, "SELECT uuid, name FROM audited_planet"))
    assert table == expected_planets(events)
    assert sum(store.outcome_counts(app_id).values()) == len(events)
    audit = query(db_url, "SELECT uuid, name, deleted FROM planet_audit ORDER BY seq")
    # Each event's write audited once at most: names are unique per event.
    names = [name for _, name, deleted in audit if not deleted]
    assert len(names) == len(set(names))
    # The audit's last entry of each key is the table's state.
    last: dict[object, object] = {}
    for uuid, name, deleted in audit:
        last[uuid] = None if deleted else name
    assert {k: v for k, v in last.items() if v is not None} == table
