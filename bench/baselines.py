"""The bounds around the measured paths: the seed's naive pattern, and the raw limits.

* ``naive``: one event at a time, the Lambda way: read the row, then insert, update or delete
  it through the same SQLAlchemy model, one transaction per event, consuming with aiokafka;
* ``raw_consume``: aiokafka reading the topic with no processing at all;
* ``raw_write``: every event's row upserted into PostgreSQL with psycopg2 ``execute_values``
  in pages of 2,000 (folded per page), as fast as Python can.

None uses a consumer group (partitions assigned by hand): each is timed from the assignment
to its last record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg2.extras import execute_values
from sqlalchemy import create_engine, delete, select
from sqlalchemy.orm import Session

from bench import database
from bench.measure import Event
from bench.paths import PLANET
from models.planet import Planet

RAW_TABLE = "raw_planet"
LIVE_ROWS_SQL = {
    "naive": f"SELECT uuid, name FROM {PLANET.table.name}",
    "raw_write": f"SELECT uuid, name FROM {RAW_TABLE}",
}


async def assigned_consumer(bootstrap: str, topic: str, ends: dict[int, int]) -> AIOKafkaConsumer:
    """A consumer of every partition from the beginning, with no group (as Lambda's is not).

    No group means no heartbeats for the blocking naive path to starve.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in ends]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    return consumer


def run_naive(bootstrap: str, db_url: str, topic: str, ends: dict[int, int]) -> dict[str, float]:
    """The seed's pattern: per event, read the row, write it, commit."""
    engine = create_engine(db_url)
    PLANET.table.create(engine, checkfirst=True)
    total = sum(ends.values())

    async def consume() -> float:
        consumer = await assigned_consumer(bootstrap, topic, ends)
        seen = 0
        started = time.monotonic()  # every path is timed from "ready to consume" to done
        try:
            with Session(engine) as session:
                while seen < total:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for messages in batch.values():
                        for message in messages:
                            apply_naively(session, message.value)
                            seen += 1
        finally:
            await consumer.stop()
        return time.monotonic() - started

    seconds = asyncio.run(consume())
    engine.dispose()
    return {"events_per_s": total / seconds, "seconds": seconds}


def apply_naively(session: Session, value: bytes | None) -> None:
    """One event, the Lambda way: a read, then an insert, update or delete, then a commit."""
    if value is None:
        return
    event = json.loads(value)
    uuid_ = event["planetUuid"]
    existing = session.execute(select(Planet).where(Planet.uuid == uuid_)).scalar_one_or_none()
    if event.get("changeType") == "DELETED":
        if existing is not None:
            session.execute(delete(Planet).where(Planet.uuid == uuid_))
    elif existing is None:
        session.add(Planet(uuid=uuid_, name=event["planetName"]))
    else:
        existing.name = event["planetName"]
    session.commit()


def run_raw_consume(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[str, float]:
    """aiokafka reading every record, no processing."""
    total = sum(ends.values())

    async def consume() -> float:
        consumer = await assigned_consumer(bootstrap, topic, ends)
        seen = 0
        started = time.monotonic()
        try:
            while seen < total:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                seen += sum(len(m) for m in batch.values())
        finally:
            await consumer.stop()
        return time.monotonic() - started

    seconds = asyncio.run(consume())
    return {"events_per_s": total / seconds, "seconds": seconds}


def run_raw_write(db_url: str, events: Sequence[Event]) -> dict[str, float]:
    """Every event's row, upserted with psycopg2 execute_values in pages of 2,000."""
    conn = database.connect(db_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {RAW_TABLE} (uuid varchar(64) PRIMARY KEY,"
            " name varchar(255) NOT NULL, version bigint NOT NULL)"
        )
    decoded = [json.loads(e.value or b"null") for e in events]  # not timed: the limit is the write
    started = time.monotonic()
    page = 2000
    with conn.cursor() as cur:
        for start in range(0, len(decoded), page):
            # Folded to the newest event per key of the page: an upsert or a delete.
            upserts: dict[str, tuple[str, str, int]] = {}
            deletes: set[str] = set()
            for i, event in enumerate(decoded[start : start + page], start=start):
                key = event["planetUuid"]
                if event.get("changeType") == "DELETED":
                    upserts.pop(key, None)
                    deletes.add(key)
                else:
                    deletes.discard(key)
                    upserts[key] = (key, event["planetName"], i)
            if upserts:
                execute_values(
                    cur,
                    f"INSERT INTO {RAW_TABLE} (uuid, name, version) VALUES %s ON CONFLICT (uuid)"
                    f" DO UPDATE SET name = excluded.name, version = excluded.version"
                    f" WHERE {RAW_TABLE}.version < excluded.version",
                    list(upserts.values()),
                    page_size=page,
                )
            if deletes:
                cur.execute(f"DELETE FROM {RAW_TABLE} WHERE uuid = ANY(%s)", (list(deletes),))
            conn.commit()
    seconds = time.monotonic() - started
    conn.close()
    return {"events_per_s": len(events) / seconds, "seconds": seconds}
