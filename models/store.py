"""The SQL store: applies a folded batch of writes to PostgreSQL or SQLite in one transaction.

Upserts are single ``INSERT ... ON CONFLICT DO UPDATE`` statements sent as one
executemany (SQLAlchemy's insertmanyvalues turns it into multi-row VALUES), deletes one
``DELETE ... WHERE key IN (...)`` per chunk: never a read followed by a write.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from models.registry import EntitySpec
from streams.errors import StoreError, StoreUnavailableError
from streams.routing import Delete, Upsert, Write

_DELETE_CHUNK = 500


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
        def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the CLI and HTTP readers read while the worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)


class SqlStore:
    """Applies batches of entity writes; all writes of one batch commit together or none do.

    Errors come out wrapped: :class:`StoreUnavailableError` (retriable: connection lost,
    server down, lock timeout) or :class:`StoreError` (the database refused a row; retrying
    the same row will not help), with entity, key and offset in the message.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("postgresql", "sqlite"):
            raise StoreError(f"unsupported database dialect {self.dialect!r}")

    @classmethod
    def from_url(cls, url: str) -> SqlStore:
        """Build a store for an SQLAlchemy URL."""
        return cls(create_store_engine(url))

    def create_tables(self, specs: Sequence[EntitySpec]) -> None:
        """Create missing tables of ``specs`` (existing ones are left as they are)."""
        with self._wrapped("create tables"):
            for spec in specs:
                spec.table.create(self.engine, checkfirst=True)

    def apply(self, spec: EntitySpec, writes: Sequence[Write]) -> None:
        """Apply ``writes`` (at most one per key) in one transaction."""
        if not writes:
            return
        with self._wrapped(_describe(spec, writes)), self.engine.begin() as conn:
            self._apply_in(conn, spec, writes)

    def _apply_in(self, conn: Connection, spec: EntitySpec, writes: Sequence[Write]) -> None:
        upserts: dict[frozenset[str], list[Mapping[str, Any]]] = {}
        deletes: list[Any] = []
        for write in writes:
            if isinstance(write, Upsert):
                upserts.setdefault(frozenset(write.row), []).append(write.row)
            else:
                deletes.append(write.key)
        for columns, rows in upserts.items():
            conn.execute(self._upsert_statement(spec, columns), list(rows))
        key = spec.table.c[spec.key_column]
        for start in range(0, len(deletes), _DELETE_CHUNK):
            chunk = deletes[start : start + _DELETE_CHUNK]
            conn.execute(delete(spec.table).where(key.in_(chunk)))

    def _upsert_statement(self, spec: EntitySpec, columns: frozenset[str]) -> Any:
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = insert(spec.table)
        update = {c: stmt.excluded[c] for c in spec.update_columns if c in columns}
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=[spec.key_column])
        return stmt.on_conflict_do_update(index_elements=[spec.key_column], set_=update)

    def rows(self, spec: EntitySpec) -> dict[Any, dict[str, Any]]:
        """Return every row of the entity's table keyed by entity key (tests, CLI)."""
        with self._wrapped(f"read {spec.kind}"), self.engine.connect() as conn:
            result = conn.execute(select(spec.table))
            return {row[spec.key_column]: dict(row) for row in result.mappings()}

    def count(self, spec: EntitySpec) -> int:
        """Count the entity's rows."""
        with self._wrapped(f"count {spec.kind}"), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(spec.table)).scalar_one())

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    @contextmanager
    def _wrapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except (IntegrityError, DataError) as exc:
            raise StoreError(f"{what}: database refused it: {_first_line(exc)}") from exc
        except DBAPIError as exc:
            raise StoreUnavailableError(f"{what}: {_first_line(exc)}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(spec: EntitySpec, writes: Sequence[Write]) -> str:
    first = writes[0].record
    last = writes[-1].record
    if len(writes) == 1:
        kind = "upsert" if isinstance(writes[0], Upsert) else "delete"
        return (
            f"{kind} {spec.kind} key={writes[0].key!r} "
            f"from {first.topic}[{first.partition}]@{first.offset}"
        )
    return (
        f"batch of {len(writes)} {spec.kind} writes "
        f"({first.topic}[{first.partition}]@{first.offset} .. "
        f"[{last.partition}]@{last.offset})"
    )


__all__ = ["Delete", "SqlStore", "Upsert", "create_store_engine"]
