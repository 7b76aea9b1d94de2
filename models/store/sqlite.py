"""The store on SQLite: SQLAlchemy's executemany and ``IN`` lists of at most 500 keys; writers
serialised by ``BEGIN IMMEDIATE`` (no locks of its own)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    delete,
    event,
    select,
    tuple_,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from models.registry import VERSION_COLUMNS, EntitySpec
from models.store.on_conflict import OnConflictDialect
from streams.core.guard import Current, StoredVersions
from streams.core.records import EntityKey, Version

#: The most keys in one ``IN`` list.
_CHUNK = 500

#: What SQLite says of a table that no longer fits the model. sqlite3 raises OperationalError
#: for these as for a busy database (PostgreSQL raises ProgrammingError), so only the message
#: tells the table's refusal from a passing failure.
_SCHEMA_ERRORS = ("no such table", "no such column", "has no column named")


class SqliteDialect(OnConflictDialect):
    """SQLite (the standard library's sqlite3), as :class:`~models.store.dialect.Dialect`
    describes."""

    name = "sqlite"
    upsert_returns_rows = False

    def __init__(self) -> None:
        super().__init__(sqlite.insert)

    def create_engine(self, url: URL) -> Engine:
        """Create the engine for ``url``: WAL, and each transaction holding the write lock from
        its start."""
        engine = create_engine(
            url,
            # Batches run in a worker thread (asyncio.to_thread), not the creating thread.
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # WAL lets the CLI and HTTP readers read while the worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Take the write lock up front, so a batch's reads and writes are one atomic step
            # even with another process writing the same file.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def lock(self, conn: Connection, name: str) -> None:
        """Take nothing: the transaction holds the database's write lock (``BEGIN
        IMMEDIATE``)."""

    def lock_entity(self, conn: Connection, spec: EntitySpec, *, exclusive: bool) -> None:
        """Take nothing: the transaction holds the database's write lock (``BEGIN
        IMMEDIATE``)."""

    def key_filters(self, columns: Sequence[Any], keys: Sequence[EntityKey]) -> list[Any]:
        """Return one ``IN`` clause per :data:`_CHUNK` keys (a row-value ``IN`` for a composite
        key: SQLite 3.15 and later)."""
        column = columns[0] if len(columns) == 1 else tuple_(*columns)
        return [column.in_(list(keys[i : i + _CHUNK])) for i in range(0, len(keys), _CHUNK)]

    def read_versions(
        self,
        conn: Connection,
        spec: EntitySpec,
        keys: Sequence[EntityKey],
        at_least: Mapping[EntityKey, Version] | None,
    ) -> StoredVersions:
        """Return every row and tombstone version of ``keys`` (``at_least`` is not used)."""
        found: dict[EntityKey, Current] = {}
        for table, is_row in ((spec.table, True), (spec.tombstone_table, False)):
            key_cols = [table.c[c] for c in spec.key_columns]
            width = len(key_cols)
            cols = [*key_cols, *(table.c[c] for c in VERSION_COLUMNS)]
            for where in self.key_filters(key_cols, keys):
                query = select(*cols).where(where).with_for_update()
                for row in conn.execute(query):
                    key = row[0] if width == 1 else tuple(row[:width])
                    was = found.get(key, Current())
                    version = _version(row)
                    found[key] = (
                        Current(row=version, tombstone=was.tombstone)
                        if is_row
                        else Current(row=was.row, tombstone=version)
                    )
        return StoredVersions.of(found)

    def upsert(
        self,
        conn: Connection,
        spec: EntitySpec,
        columns: tuple[str, ...],
        values: Sequence[tuple[Any, ...]],
        *,
        returning: bool,
    ) -> list[dict[str, Any]]:
        """Upsert by executemany; return nothing (the rows are read back)."""
        statement = self.row_upsert(spec, columns)
        conn.execute(statement, [dict(zip(columns, v, strict=True)) for v in values])
        return []

    def delete_keys(
        self,
        conn: Connection,
        table: Table,
        key_columns: tuple[str, ...],
        keys: Sequence[EntityKey],
    ) -> None:
        """Delete the rows of ``keys``, :data:`_CHUNK` at a time."""
        for where in self.key_filters([table.c[c] for c in key_columns], keys):
            conn.execute(delete(table).where(where))

    def insert_many(
        self, conn: Connection, statement: Any, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Execute an INSERT for many rows by executemany."""
        conn.execute(statement, list(rows))

    def conflicts(self, exc: DBAPIError) -> bool:
        """Tell none: writers wait for each other (``BEGIN IMMEDIATE``), nothing deadlocks."""
        return False

    def refuses(self, exc: DBAPIError) -> bool:
        """Tell whether ``exc`` is SQLite saying that a table does not fit (see
        :data:`_SCHEMA_ERRORS`)."""
        return isinstance(exc.orig, sqlite3.OperationalError) and any(
            text in str(exc.orig) for text in _SCHEMA_ERRORS
        )


def _version(row: Any) -> Version:
    return (int(row.mirror_version), int(row.mirror_partition), int(row.mirror_offset))
