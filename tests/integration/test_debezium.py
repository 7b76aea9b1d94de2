"""Debezium change events through the real broker into each database, written by hand in the shapes
Debezium 3.x's PostgreSQL connector writes (tests/debezium_events.py).

One worker mirrors ``tests/models/debezium_customers.py``: the envelope (versions from the LSN)
and the flattened rows. Snapshot reads, creates, updates (with and without the JsonConverter's
schema in one topic), deletes with their tombstones, a primary-key change, a truncate that must
become a dead letter, and a connector's re-emitted older events that must not win. The tables
must end exactly as expected, every logical type as its column takes it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, select

from models.store import SqlStore
from tests.debezium_events import compact, envelope, key_of, with_schema
from tests.integration.test_poison import read_all
from tests.models.debezium_customers import DbzCustomer, FlatCustomer
from tests.support import create_topic, make_worker, produce, wait_caught_up

ENVELOPE_TOPIC = "dbserver1.public.customer"
FLAT_TOPIC = "flat.public.customer"
COLUMNS = ("id", "name", "born", "seen", "at", "price", "photo", "prefs", "opens", "note")


def row(id: str, name: str, **values: Any) -> dict[str, Any]:
    """A row of ``public.customer`` as the connector writes it (columns not given are null)."""
    return {column: None for column in COLUMNS} | {"id": id, "name": name, **values}


def key_only(id: str) -> dict[str, Any]:
    """``before`` of a delete under REPLICA IDENTITY DEFAULT: the key, the rest null."""
    return {column: None for column in COLUMNS} | {"id": id}


def read_table(url: str, table: Table) -> dict[str, tuple[Any, ...]]:
    """Read ``table`` through SQLAlchemy's types, times in UTC without their zone (as MariaDB
    and SQLite keep them)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(*(table.c[c] for c in COLUMNS)))
            return {r[0]: tuple(_plain(v) for v in r[1:]) for r in rows}
    finally:
        engine.dispose()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return bytes(value) if isinstance(value, memoryview) else value


def envelope_stream() -> list[tuple[bytes | None, bytes | None]]:
    """The change events of ``public.customer``, in the order the connector writes them."""
    plain = compact
    typed = row(
        "c4",
        "Dora",
        born=19000,
        seen=1_700_000_000_123_456,
        at="2024-05-01T10:15:30.123456Z",
        price="AeJA",
        photo="AQID",
        prefs='{"tea": true}',
        opens=34_200_000_000,
        note='{"tea": true}',
    )
    return [
        # The initial snapshot: reads, all at the snapshot's LSN.
        (key_of(id="c1"), plain(envelope("r", after=row("c1", "Ada"), lsn=100, snapshot="first"))),
        (key_of(id="c2"), plain(envelope("r", after=row("c2", "Bob"), lsn=100, snapshot="true"))),
        (key_of(id="c3"), plain(envelope("r", after=row("c3", "Cy"), lsn=100, snapshot="last"))),
        # Streaming: a create, an update with the schema on, a delete and its tombstone.
        (key_of(id="c4"), plain(envelope("c", after=row("c4", "Dora"), lsn=200))),
        (
            key_of(id="c1"),
            with_schema(envelope("u", before=None, after=row("c1", "Ada L."), lsn=210)),
        ),
        (key_of(id="c2"), plain(envelope("d", before=key_only("c2"), lsn=220))),
        (key_of(id="c2"), None),
        # UPDATE customer SET id = 'c5' WHERE id = 'c3': a delete of the old key, a create.
        (key_of(id="c3"), plain(envelope("d", before=key_only("c3"), lsn=230))),
        (key_of(id="c3"), None),
        (key_of(id="c5"), plain(envelope("c", after=row("c5", "Cy"), lsn=231))),
        # TRUNCATE customer: not mirrored, a dead letter.
        (None, plain(envelope("t", lsn=240))),
        # Every logical type, with the schema on.
        (key_of(id="c4"), with_schema(envelope("u", after=typed, lsn=250))),
        # The connector restarts and emits older events again: none may win.
        (key_of(id="c1"), plain(envelope("u", after=row("c1", "Stale"), lsn=210))),
        (key_of(id="c2"), plain(envelope("r", after=row("c2", "Bob"), lsn=100))),
        (key_of(id="c4"), plain(envelope("d", before=key_only("c4"), lsn=220))),
        (key_of(id="c4"), None),
        (key_of(id="c3"), plain(envelope("c", after=row("c3", "Cy"), lsn=100))),
    ]


def flat_stream() -> list[tuple[bytes | None, bytes | None]]:
    """The same kind of changes through ExtractNewRecordState (deletes rewritten)."""

    def flat(r: dict[str, Any], op: str, deleted: str = "false") -> bytes:
        return compact({**r, "__op": op, "__deleted": deleted, "__source_ts_ms": 1})

    return [
        (key_of(id="f1"), flat(row("f1", "Eve", born=19000, price="1.50"), "r")),
        (key_of(id="f2"), flat(row("f2", "Fay"), "c")),
        (key_of(id="f1"), flat(row("f1", "Eve B.", born="2022-01-09Z", price="2.25"), "u")),
        (key_of(id="f2"), flat(key_only("f2"), "d", deleted="true")),
        (key_of(id="f2"), None),
    ]


async def test_debezium_events_mirror_exactly_and_old_events_do_not_win(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    for topic in (ENVELOPE_TOPIC, FLAT_TOPIC):
        await create_topic(kafka_bootstrap, f"{topic_prefix}{topic}", partitions=1)
    worker, app_id = make_worker(
        kafka_bootstrap,
        db_url,
        topic_prefix,
        tmp_path,
        "debezium",
        ENTITY_MODULES="tests.models.debezium_customers",
    )
    await produce(kafka_bootstrap, f"{topic_prefix}{ENVELOPE_TOPIC}", envelope_stream())
    await produce(kafka_bootstrap, f"{topic_prefix}{FLAT_TOPIC}", flat_stream())
    worker.start()
    try:
        for topic in (ENVELOPE_TOPIC, FLAT_TOPIC):
            await wait_caught_up(
                kafka_bootstrap, app_id, f"{topic_prefix}{topic}", alive=worker.assert_alive
            )
    finally:
        worker.stop()

    nothing = (None,) * 8
    assert read_table(db_url, DbzCustomer.__table__) == {
        "c1": ("Ada L.", *nothing),
        "c4": (
            "Dora",
            date(2022, 1, 8),
            datetime(2023, 11, 14, 22, 13, 20, 123456),
            datetime(2024, 5, 1, 10, 15, 30, 123456),
            Decimal("1234.56"),
            b"\x01\x02\x03",
            {"tea": True},
            time(9, 30),
            '{"tea": true}',
        ),
        "c5": ("Cy", *nothing),
    }
    assert read_table(db_url, FlatCustomer.__table__) == {
        "f1": ("Eve B.", date(2022, 1, 9), None, None, Decimal("2.25"), None, None, None, None),
    }

    dead = await read_all(kafka_bootstrap, f"{topic_prefix}{ENVELOPE_TOPIC}.dlq")
    assert [headers["dlq.reason"] for _, _, headers in dead] == ["not_mirrored"]
    assert "truncate" in dead[0][2]["dlq.detail"]
    store = SqlStore.from_url(db_url)
    try:
        counts = {
            (t.removeprefix(topic_prefix), outcome): n
            for (t, outcome), n in store.outcome_counts(app_id).items()
        }
    finally:
        store.dispose()
    # The four re-emitted events are skipped. Once record keys are read as Debezium's JSON
    # objects (streams/core/keys.py), the three tombstones are skipped too (the least version).
    assert counts[(ENVELOPE_TOPIC, "rejected")] == 1
    assert counts[(ENVELOPE_TOPIC, "skipped")] in (4, 7), counts
