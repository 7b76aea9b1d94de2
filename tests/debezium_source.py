"""A real PostgreSQL source for Debezium's PostgreSQL connector, as the Debezium tests use it.

Each test gets a fresh source database holding ``SOURCE_TABLES`` (one table with a
single-column key and varied types, one with a composite key), a publication of exactly those
tables, a replication slot per connector and a ``topic.prefix`` of its own. At the end every
slot is dropped, even on failure (a slot left behind holds the server's WAL for ever), then the
database. The connector streams through ``pgoutput`` (the server's own logical decoding), so
the server must run with ``wal_level=logical`` (devservices/postgres.py starts it so);
``require_logical`` checks that first and fails saying what to do.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from devservices import postgres as dev_postgres
from devservices.dbserver import autocommit

CUSTOMER = "pipeline_customer"
ORDER_LINE = "pipeline_order_line"
TABLES = (CUSTOMER, ORDER_LINE)
#: The source tables: every column type the brief names, and a composite key.
SOURCE_TABLES = (
    f"""CREATE TABLE {CUSTOMER} (
        id text PRIMARY KEY,
        name text NOT NULL,
        visits integer,
        points bigint,
        active boolean,
        balance numeric(12, 2),
        seen_at timestamp,
        changed_at timestamptz,
        born_on date,
        ref uuid,
        notice interval,
        amount numeric(38, 10)
    )""",
    f"""CREATE TABLE {ORDER_LINE} (
        order_id text NOT NULL,
        line_no integer NOT NULL,
        sku text NOT NULL,
        quantity integer NOT NULL,
        price numeric(12, 2),
        PRIMARY KEY (order_id, line_no)
    )""",
)
CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
#: How long ``require_logical`` waits for a server restarted meanwhile to run logical WAL.
LOGICAL_WAIT = 60.0

#: Columns of each table, the key first (what is compared), and the ORDER BY of a read.
COLUMNS = {
    CUSTOMER: (
        "id",
        "name",
        "visits",
        "points",
        "active",
        "balance",
        "seen_at",
        "changed_at",
        "born_on",
        "ref",
        "notice",
        "amount",
    ),
    ORDER_LINE: ("order_id", "line_no", "sku", "quantity", "price"),
}
ORDER_BY = {CUSTOMER: "id", ORDER_LINE: "order_id, line_no"}


#: Wide enough for every digit of a numeric(38, 10): the default context keeps 28.
EXACT = Context(prec=100)
#: SQLAlchemy's Interval on MariaDB: a DATETIME this far past the epoch.
EPOCH = datetime(1970, 1, 1)


def normalized(column: str, value: Any) -> Any:
    """A value as compared: numbers by value, aware timestamps as UTC wall time (MariaDB's
    DATETIME, where the store writes them in UTC, reads back without a zone), an interval as a
    duration (MariaDB keeps it as a DATETIME), a UUID as its text (MariaDB's may lack dashes)."""
    if column == "notice" and isinstance(value, datetime):
        return value - EPOCH
    if column == "ref" and value is not None:
        return str(uuid.UUID(str(value)))
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, (Decimal, float)) and not isinstance(value, bool):
        return Decimal(str(value)).normalize(EXACT)
    return value


def table_rows(url: str, table: str, name: str | None = None) -> list[tuple[Any, ...]]:
    """Return the rows of source table ``table`` (or of its mirror, ``name``): its source
    columns only, normalized, in key order."""
    engine = create_engine(url)
    columns = COLUMNS[table]
    try:
        with engine.connect() as conn:
            query = f"SELECT {', '.join(columns)} FROM {name or table} ORDER BY {ORDER_BY[table]}"
            return [
                tuple(normalized(c, v) for c, v in zip(columns, row, strict=True))
                for row in conn.execute(text(query))
            ]
    finally:
        engine.dispose()


def wal_level(server_url: str) -> str:
    """Return the server's ``wal_level``."""
    engine = create_engine(server_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW wal_level")).scalar_one())
    finally:
        engine.dispose()


def require_logical(server_url: str, timeout: float = LOGICAL_WAIT) -> None:
    """Wait until the server runs with ``wal_level=logical`` (a restart may be under way);
    fail saying how to get there when it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    level = "(no answer)"
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a server being restarted does not answer
            level = wal_level(server_url)
            if level == "logical":
                return
        time.sleep(1.0)
    raise AssertionError(
        f"the PostgreSQL server of the tests runs with wal_level={level}; Debezium's "
        "connector needs logical: a server started by an older devservices/postgres.py keeps "
        "its old setting until it is restarted (./run postgres stop, then the tests start it)"
    )


@dataclass
class DebeziumSource:
    """A fresh source database, its publication, and the slots its connectors use."""

    server_url: str
    database: str
    url: str
    """SQLAlchemy URL of the source database."""
    topic_prefix: str
    """Base of each connector's ``topic.prefix`` (a connector adds its own suffix, if any)."""
    publication: str
    slots: list[str] = field(default_factory=list)
    """Replication slots named so far (``connector_config``): dropped at the end."""
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """An engine on the source database (disposed of at the end)."""
        if self._engine is None:
            self._engine = create_engine(self.url)
        return self._engine

    def execute(self, *statements: str, **params: Any) -> None:
        """Run ``statements`` in one transaction of the source database."""
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), params)

    def rows(self, table: str, order_by: str) -> list[dict[str, Any]]:
        """Return the rows of ``table`` as dicts, ordered by ``order_by``."""
        with self.engine.connect() as conn:
            result = conn.execute(text(f"SELECT * FROM {table} ORDER BY {order_by}"))
            return [dict(row._mapping) for row in result]

    def topic(self, table: str, suffix: str = "") -> str:
        """Return the topic the connector of ``suffix`` writes ``table``'s changes to."""
        return f"{self.topic_prefix}{suffix}.public.{table}"

    def connector_config(
        self, suffix: str = "", *, schemas: bool = True, **overrides: object
    ) -> dict[str, object]:
        """Return a connector's settings: its own slot and ``topic.prefix`` (``suffix``
        appended), JsonConverter with or without schemas, then ``overrides``."""
        slot = f"{self.database}{suffix.replace('-', '_')}"[:63]
        self.slots.append(slot)
        url = make_url(self.url)
        return {
            "connector.class": CONNECTOR_CLASS,
            "tasks.max": 1,
            "plugin.name": "pgoutput",
            "database.hostname": url.host,
            "database.port": url.port,
            "database.user": url.username,
            "database.password": url.password,
            "database.dbname": self.database,
            "topic.prefix": f"{self.topic_prefix}{suffix}",
            "table.include.list": ",".join(f"public.{table}" for table in TABLES),
            "slot.name": slot,
            "publication.name": self.publication,
            # The test creates the publication (exactly its tables), Debezium only uses it.
            "publication.autocreate.mode": "disabled",
            "snapshot.mode": "initial",
            "key.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": str(schemas).lower(),
            "value.converter": JSON_CONVERTER,
            "value.converter.schemas.enable": str(schemas).lower(),
            **overrides,
        }

    def drop_slots(self) -> None:
        """Drop every slot named, ending a walsender still attached to one first."""
        with autocommit(self.server_url, "drop replication slots") as conn:
            for slot in self.slots:
                _drop_slot(conn, slot)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _drop_slot(conn: Any, slot: str, timeout: float = 30.0) -> None:
    """Drop replication slot ``slot`` if it exists; a connector still attached is cut off."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            text("SELECT active_pid FROM pg_replication_slots WHERE slot_name = :slot"),
            {"slot": slot},
        ).one_or_none()
        if row is None:
            return
        if row.active_pid is None:
            conn.execute(text("SELECT pg_drop_replication_slot(:slot)"), {"slot": slot})
            return
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": row.active_pid})
        if time.monotonic() >= deadline:
            raise AssertionError(f"replication slot {slot} still in use after {timeout:.0f} s")
        time.sleep(0.2)


@contextlib.contextmanager
def debezium_source(
    server_url: str, database: str, topic_prefix: str, initial: Sequence[str] = ()
) -> Iterator[DebeziumSource]:
    """Create source database ``database`` with ``SOURCE_TABLES`` and their publication,
    run ``initial`` (the rows the snapshot reads), yield it; at the end drop its slots, then
    the database."""
    require_logical(server_url)
    url = dev_postgres.create_database(server_url, database)
    source = DebeziumSource(server_url, database, url, topic_prefix, f"{database}_pub"[:63])
    try:
        source.execute(
            *SOURCE_TABLES,
            f"CREATE PUBLICATION {source.publication} FOR TABLE {', '.join(TABLES)}",
            *initial,
        )
        yield source
    finally:
        source.dispose()
        try:
            source.drop_slots()
        finally:
            dev_postgres.drop_database(server_url, database)
