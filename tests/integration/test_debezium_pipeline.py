"""The real Debezium pipeline: PostgreSQL -> Debezium's connector -> Kafka -> the worker -> SQL.

Debezium's PostgreSQL connector 3.6.0.Final (``pgoutput``, in Kafka Connect standalone 4.4:
devservices/connect.py) captures two tables of a fresh source database (tests/debezium_source.py):
customers (a text key; integer, bigint, boolean, numeric, timestamp, timestamptz, date, uuid,
interval and numeric(38, 10) columns) and order lines (a composite key: order and line
number). The worker mirrors them, declared as tests/models/debezium_pipeline.py declares
them (``__input_format__ = "debezium"``, the customers versioned by ``source.lsn``), into
another database: a fresh PostgreSQL database, and a fresh MariaDB database.

The snapshot is read first; then random transactions of inserts, updates, deletes, primary-key
changes and re-inserts of deleted keys run on the source while the worker applies them, and
the worker is SIGKILLed in the middle and started again. Once Connect has written every change
the script made and the worker's group has caught up with both topics, each mirrored table
must equal its source table row for row, every record counted exactly once with no dead letter.

Last, a connector restarted without offsets emits every live change again (what Debezium,
delivering at least once, does after a crash): under ``source.lsn`` versions not one of them
may apply, and both tables must still equal their sources.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from devservices.connect import ConnectStandalone
from models.store import SqlStore
from tests.debezium_source import (
    COLUMNS,
    CUSTOMER,
    ORDER_LINE,
    TABLES,
    DebeziumSource,
    debezium_source,
    table_rows,
)
from tests.support import (
    end_offsets,
    make_worker,
    partitions_of,
    wait_caught_up,
    wait_ready,
    wait_stored,
)
from tests.waiting import eventually

SNAPSHOT_CUSTOMERS = 40
SNAPSHOT_LINES = 60
#: Transactions of live changes: applied before the SIGKILL, running while it strikes (it
#: strikes when the worker has applied half of them), and run while the worker is down.
LIVE_TRANSACTIONS = (30, 60, 30)
#: Records Debezium writes for one change: a delete is followed by a tombstone, and a change
#: of primary key is the old key's delete and tombstone, then the new key's create.
RECORDS = {"insert": 1, "update": 1, "delete": 2, "rekey": 3}
#: The kinds of change, as often as each is drawn ("reinsert": a deleted key inserted again).
KINDS = ["insert"] * 3 + ["update"] * 5 + ["delete"] * 2 + ["rekey", "reinsert"]

Statement = tuple[str, Mapping[str, Any]]


@dataclass
class ChangeScript:
    """Random, valid changes to the source tables, counting the records Debezium writes."""

    rng: random.Random
    customers: set[str] = field(default_factory=set)
    deleted_customers: set[str] = field(default_factory=set)
    lines: set[tuple[str, int]] = field(default_factory=set)
    deleted_lines: set[tuple[str, int]] = field(default_factory=set)
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    _serial: int = 0

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    def customer_values(self) -> dict[str, Any]:
        rng = self.rng

        def maybe(value: Any) -> Any:
            return None if rng.random() < 0.15 else value

        offset = timezone(timedelta(minutes=rng.choice((-300, 0, 60, 330))))
        return {
            "name": rng.choice(("Ada", "Grace", "Linus", "Barbara", "Edsger"))
            + f" {rng.random():.6f}",
            "visits": maybe(rng.randint(-(2**31), 2**31 - 1)),
            "points": maybe(rng.randint(-(2**62), 2**62)),
            "active": maybe(rng.random() < 0.5),
            "balance": maybe(Decimal(rng.randint(-(10**12) + 1, 10**12 - 1)) / 100),
            "seen_at": maybe(
                datetime(1950, 1, 1) + timedelta(microseconds=rng.randint(0, 3_000_000_000_000_000))
            ),
            "changed_at": maybe(
                datetime(2020, 1, 1, tzinfo=offset)
                + timedelta(microseconds=rng.randint(0, 300_000_000_000_000))
            ),
            "born_on": maybe(date(1900, 1, 1) + timedelta(days=rng.randint(0, 60_000))),
            # Version 4: MariaDB 10.11's UUID type refuses some other 128-bit values (a
            # version 6 to 8 without RFC 4122's variant bits) that PostgreSQL takes.
            "ref": maybe(str(uuid.UUID(int=rng.getrandbits(128), version=4))),
            # Days and time, no months: a month's length is Debezium's average, not psycopg2's.
            # Seconds in 64ths: Debezium computes MicroDuration in doubles and truncates
            # (MicroDuration.durationMicros), so 41.963453 s can come as 41963452 us; the
            # mirror stores what Debezium wrote, and these fractions come through exactly.
            "notice": maybe(
                timedelta(
                    days=rng.randint(-3000, 3000),
                    microseconds=15_625 * rng.randint(0, 86_400 * 64 - 1),
                )
            ),
            # numeric(38, 10): built from its text, as arithmetic would round it to 28 digits.
            "amount": maybe(Decimal(f"{rng.randint(-(10**38) + 1, 10**38 - 1)}E-10")),
        }

    def line_values(self) -> dict[str, Any]:
        rng = self.rng
        price = Decimal(rng.randint(0, 10**8)) / 100
        return {
            "sku": f"sku-{rng.randint(1, 30)}",
            "quantity": rng.randint(1, 50),
            "price": None if rng.random() < 0.1 else price,
        }

    def insert_customer(self, customer_id: str | None = None) -> Statement:
        customer_id = customer_id or f"c-{self._next()}"
        self.customers.add(customer_id)
        self.deleted_customers.discard(customer_id)
        self.records[CUSTOMER] += RECORDS["insert"]
        columns = COLUMNS[CUSTOMER]
        sql = (
            f"INSERT INTO {CUSTOMER} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})"
        )
        return sql, {"id": customer_id, **self.customer_values()}

    def insert_line(self, key: tuple[str, int] | None = None) -> Statement:
        order_id, line_no = key or (f"o-{self.rng.randint(1, 25)}", self._next())
        self.lines.add((order_id, line_no))
        self.deleted_lines.discard((order_id, line_no))
        self.records[ORDER_LINE] += RECORDS["insert"]
        columns = COLUMNS[ORDER_LINE]
        sql = (
            f"INSERT INTO {ORDER_LINE} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})"
        )
        return sql, {"order_id": order_id, "line_no": line_no, **self.line_values()}

    def snapshot(self) -> list[Statement]:
        """The rows the snapshot reads (Debezium writes one ``r`` for each)."""
        rows = [self.insert_customer() for _ in range(SNAPSHOT_CUSTOMERS)]
        return rows + [self.insert_line() for _ in range(SNAPSHOT_LINES)]

    def change(self) -> Statement:
        """One random change of either table."""
        if self.rng.random() < 0.5:
            return self._change_customer()
        return self._change_line()

    def _kind(self, live: set[Any], deleted: set[Any]) -> str:
        """A random kind of change that the table's rows allow."""
        kind = self.rng.choice(KINDS) if live else "insert"
        return "insert" if kind == "reinsert" and not deleted else kind

    def _update(self, table: str, values: dict[str, Any], key: dict[str, Any]) -> Statement:
        """An UPDATE of some of ``values``' columns of the row of ``key``."""
        chosen = self.rng.sample(sorted(values), self.rng.randint(1, len(values)))
        sets = ", ".join(f"{c} = :{c}" for c in chosen)
        where = " AND ".join(f"{c} = :{c}" for c in key)
        return f"UPDATE {table} SET {sets} WHERE {where}", {
            **key,
            **{c: values[c] for c in chosen},
        }

    def _change_customer(self) -> Statement:
        kind = self._kind(self.customers, self.deleted_customers)
        if kind == "reinsert":
            return self.insert_customer(self.rng.choice(sorted(self.deleted_customers)))
        if kind == "insert":
            return self.insert_customer()
        old = self.rng.choice(sorted(self.customers))
        self.records[CUSTOMER] += RECORDS[kind]
        if kind == "update":
            return self._update(CUSTOMER, self.customer_values(), {"id": old})
        self.customers.discard(old)
        self.deleted_customers.add(old)
        if kind == "delete":
            return f"DELETE FROM {CUSTOMER} WHERE id = :id", {"id": old}
        new = f"c-{self._next()}"
        self.customers.add(new)
        return f"UPDATE {CUSTOMER} SET id = :new WHERE id = :id", {"id": old, "new": new}

    def _change_line(self) -> Statement:
        kind = self._kind(self.lines, self.deleted_lines)
        if kind == "reinsert":
            return self.insert_line(self.rng.choice(sorted(self.deleted_lines)))
        if kind == "insert":
            return self.insert_line()
        order_id, line_no = old = self.rng.choice(sorted(self.lines))
        key = {"order_id": order_id, "line_no": line_no}
        self.records[ORDER_LINE] += RECORDS[kind]
        if kind == "update":
            return self._update(ORDER_LINE, self.line_values(), key)
        self.lines.discard(old)
        self.deleted_lines.add(old)
        where = "order_id = :order_id AND line_no = :line_no"
        if kind == "delete":
            return f"DELETE FROM {ORDER_LINE} WHERE {where}", key
        # A new line number, and now and then the line moved to another order: both key parts.
        new = (
            f"o-{self.rng.randint(1, 25)}" if self.rng.random() < 0.3 else order_id,
            self._next(),
        )
        self.lines.add(new)
        sets = "order_id = :new_order, line_no = :new_line"
        return f"UPDATE {ORDER_LINE} SET {sets} WHERE {where}", {
            **key,
            "new_order": new[0],
            "new_line": new[1],
        }

    def transactions(self, count: int) -> list[list[Statement]]:
        """``count`` transactions of one to four changes each."""
        return [[self.change() for _ in range(self.rng.randint(1, 4))] for _ in range(count)]


def run_transactions(source: DebeziumSource, transactions: Sequence[Sequence[Statement]]) -> None:
    """Run each transaction on the source, one after another."""
    for statements in transactions:
        with source.engine.begin() as conn:
            for sql, params in statements:
                conn.execute(text(sql), dict(params))


@pytest.fixture
def script() -> ChangeScript:
    return ChangeScript(random.Random(25))


@pytest.fixture
def source(pg_server_url: str, script: ChangeScript) -> Iterator[DebeziumSource]:
    """A fresh source database holding the snapshot's rows; its slot dropped at the end."""
    database = f"dbz_pipeline_{uuid.uuid4().hex[:10]}"
    with debezium_source(pg_server_url, database, database.replace("_", "-")) as created:
        run_transactions(created, [script.snapshot()])
        yield created


async def test_debezium_captures_postgresql_and_the_worker_mirrors_it_row_for_row(
    connect_standalone: ConnectStandalone,
    kafka_bootstrap: str,
    source: DebeziumSource,
    script: ChangeScript,
    server_db_url: str,
    tmp_path: Path,
) -> None:
    connector, again = source.database, f"{source.database}-again"
    topics = {table: source.topic(table) for table in TABLES}
    config = source.connector_config(
        schemas=True,
        # Three partitions a table, as a production topic has several: a change of key moves
        # the row to another partition, and the worker must still end with the source's rows.
        **{
            "topic.creation.default.partitions": 3,
            "topic.creation.default.replication.factor": 1,
            # The slot is never advanced, so that a connector without offsets (the last step)
            # streams every change again from where this one began.
            "flush.lsn.source": "false",
        },
    )
    worker, app_id = make_worker(
        kafka_bootstrap,
        server_db_url,
        f"{source.topic_prefix}.",
        tmp_path,
        "debezium",
        ENTITY_MODULES="tests.models.debezium_pipeline",
        BATCH_SIZE="50",
        SESSION_TIMEOUT="6",
    )
    store = SqlStore.from_url(server_db_url)

    async def written() -> dict[str, int]:
        """Records Connect has written to each table's topic so far."""
        connect_standalone.check([connector, again])
        seen = {}
        for table, topic in topics.items():
            parts = await partitions_of(kafka_bootstrap, topic)
            seen[table] = sum((await end_offsets(kafka_bootstrap, topic)).values()) if parts else 0
        return seen

    async def connect_wrote(expected: dict[str, int], what: str) -> None:
        await eventually(written, lambda seen: seen == expected, what=what)

    async def mirrored(records: dict[str, int]) -> dict[str, dict[str, int]]:
        """Wait for Connect to write ``records`` and the worker to catch up; check each table
        against its source and every record counted once; return the outcome counts."""
        await connect_wrote(records, f"Connect writing {records} records")
        for topic in topics.values():
            await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        for table in TABLES:
            source_rows = table_rows(source.url, table)
            assert table_rows(server_db_url, table) == source_rows, table
            assert len(source_rows) > 0, table
        outcomes = store.outcome_counts(app_id)
        counts = {}
        for table, topic in topics.items():
            counts[table] = {outcome: n for (t, outcome), n in outcomes.items() if t == topic}
            assert "rejected" not in counts[table], (table, counts[table])
            # Every record once: a replay after the SIGKILL counts nothing twice.
            assert sum(counts[table].values()) == records[table], (table, counts[table])
        return counts

    try:
        await asyncio.to_thread(connect_standalone.create, connector, config)
        snapshot = dict(script.records)
        await connect_wrote(snapshot, "the snapshot of both tables in Kafka")
        worker.start()
        await wait_ready(worker)
        await wait_stored(store, app_id, sum(snapshot.values()), worker)

        # Live changes: some applied, more while the worker applies them and a SIGKILL
        # halfway through those, the rest while it is down; then a restart: replays must
        # change nothing, and what changed meanwhile must come through.
        # Each part with the records Debezium will have written once it has run.
        parts = [(script.transactions(n), dict(script.records)) for n in LIVE_TRANSACTIONS]
        (before, written_before), (during, written_during), (after, _) = parts
        await asyncio.to_thread(run_transactions, source, before)
        await connect_wrote(written_before, "the first changes in Kafka")
        applied = sum(written_before.values())
        await wait_stored(store, app_id, applied, worker)
        changing = asyncio.create_task(asyncio.to_thread(run_transactions, source, during))
        await wait_stored(store, app_id, (applied + sum(written_during.values())) // 2, worker)
        worker.kill()
        await changing
        await asyncio.to_thread(run_transactions, source, after)
        worker.start()
        await wait_ready(worker)
        counts = await mirrored(dict(script.records))

        # A connector that restarts from an older position emits changes again (Debezium
        # delivers at least once): here every live change, with its own source.lsn, as after
        # a crash that lost the connector's offsets. Under source.lsn versions (customers)
        # none may apply, not even for a moment; under record positions (order lines) they
        # apply again in order and end where they were.
        await asyncio.to_thread(connect_standalone.delete, connector)
        await asyncio.to_thread(
            connect_standalone.create, again, {**config, "snapshot.mode": "no_data"}
        )
        twice = {table: 2 * script.records[table] - snapshot[table] for table in TABLES}
        replayed = await mirrored(twice)
        assert replayed[CUSTOMER]["applied"] == counts[CUSTOMER]["applied"], replayed
    finally:
        worker.stop()
        store.dispose()
        for name in (connector, again):
            await asyncio.to_thread(connect_standalone.delete, name)
