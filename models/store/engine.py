"""The store's SQLAlchemy engine, set up as the mirror relies on (SQLite or PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry


def create_store_engine(url: str) -> Engine:
    """Create the engine for ``url`` with the settings the mirror relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
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
    return create_engine(
        parsed,
        # No pre-ping: a round trip per batch. A connection broken by a server restart
        # fails its batch with a retriable error, SQLAlchemy drops it, the retry reconnects.
        pool_size=5,
        max_overflow=5,
        # Batch UPDATE/DELETE executemany too, not only INSERTs.
        executemany_mode="values_plus_batch",
    )
