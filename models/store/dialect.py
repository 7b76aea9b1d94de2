"""What differs by database, as one small interface: each database is a module behind it.

The batch's transaction (``models.store.batch``) is the same on every database: it reads,
writes and stores offsets through a :class:`Dialect`. A module per database implements it
(``postgres``, ``sqlite``, and ``mysql`` for MySQL and MariaDB); ``engine`` picks one by the
engine's dialect name. A new database is one new module (and its tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError

from models.registry import EntitySpec
from streams.core.decisions import Delete
from streams.core.guard import StoredVersions
from streams.core.records import EntityKey, Version

#: Execution option set on the connection of a batch's transaction (``SqlStore.transaction``).
IN_BATCH = "mirror_in_batch"


class BookkeepingUpserts(NamedTuple):
    """The upserts of the bookkeeping tables (``models.store.schema``), in the database's SQL."""

    offsets: Any
    """Store a partition's next offset, never moving it backwards."""
    counts: Any
    """Add to an outcome count."""
    changelog: Any
    """Record which changelog topic (by id) a table's rows were written to."""
    log: Any
    """Note a topic's id: a new row, or the id of a row that had none (never another id: that
    is a recreated topic, :meth:`models.store.SqlStore.restart_log`)."""


class Dialect(Protocol):
    """The operations of a batch's transaction that differ by database.

    Every write keeps the version guard in the database itself (a row or tombstone is only
    replaced by a newer version), since a row may be written after the batch read it.
    """

    name: str
    """SQLAlchemy's name of the database (``engine.dialect.name``)."""
    upsert_returns_rows: bool
    """Whether :meth:`upsert` returns the rows it wrote; if not, they are read back."""
    bookkeeping: BookkeepingUpserts

    def create_engine(self, url: URL) -> Engine:
        """Create the engine for ``url`` with the settings the mirror relies on."""
        ...

    def prepare(
        self, conn: Connection, specs: Sequence[EntitySpec], tables: Sequence[Table]
    ) -> None:
        """After the tables are created: make what the dialect's own locks need, and raise
        ``UnfitTable`` for one of ``tables`` that cannot keep the guarantees here."""
        ...

    def lock(self, conn: Connection, name: str) -> None:
        """Take the lock ``name`` until the transaction ends, across processes (none where
        the database serialises its writers already)."""
        ...

    def lock_entity(self, conn: Connection, spec: EntitySpec, *, exclusive: bool) -> None:
        """Keep other transactions from writing the entity's keys meanwhile (shared: those
        that also take it shared may; see ``StoreTransaction.serialize``)."""
        ...

    def key_filters(self, columns: Sequence[Any], keys: Sequence[EntityKey]) -> list[Any]:
        """Return WHERE clauses that together select ``keys`` of the key ``columns`` (one, or
        a composite key's, whose keys are tuples)."""
        ...

    def read_versions(
        self,
        conn: Connection,
        spec: EntitySpec,
        keys: Sequence[EntityKey],
        at_least: Mapping[EntityKey, Version] | None,
    ) -> StoredVersions:
        """Return the row and tombstone versions of ``keys`` (not empty); with ``at_least``,
        row versions older than it may be left out (see ``StoreTransaction.current``)."""
        ...

    def upsert(
        self,
        conn: Connection,
        spec: EntitySpec,
        columns: tuple[str, ...],
        values: Sequence[tuple[Any, ...]],
        *,
        returning: bool,
    ) -> list[dict[str, Any]]:
        """Upsert rows (``values`` in ``columns`` order) with the version guard; with
        ``returning`` (and :attr:`upsert_returns_rows`), return the rows written."""
        ...

    def delete(self, conn: Connection, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        """Delete the rows of ``writes`` (not empty) and write their tombstones."""
        ...

    def write_tombstones(
        self, conn: Connection, spec: EntitySpec, writes: Sequence[Delete]
    ) -> None:
        """Write the tombstones of ``writes`` (unless a newer one is there)."""
        ...

    def delete_keys(
        self,
        conn: Connection,
        table: Table,
        key_columns: tuple[str, ...],
        keys: Sequence[EntityKey],
    ) -> None:
        """Delete the rows of ``keys`` (not empty) from ``table`` (``key_columns``: the one key
        column, or a composite key's, whose keys are tuples)."""
        ...

    def insert_many(
        self, conn: Connection, statement: Any, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Execute an INSERT (such as a :class:`BookkeepingUpserts` one) for many rows."""
        ...

    def conflicts(self, exc: DBAPIError) -> bool:
        """Tell whether ``exc`` is the database giving up this transaction for another's
        locks (a deadlock, a lock wait timeout): passing, and counted apart."""
        ...

    def refuses(self, exc: DBAPIError) -> bool:
        """Tell whether ``exc``, of a kind SQLAlchemy calls operational, is the database
        refusing the statement (a table that does not fit the model) rather than failing."""
        ...


def is_row_fault(exc: BaseException, dialect: Dialect) -> bool:
    """Tell whether ``exc`` can come from one row's values rather than from the database."""
    if isinstance(exc, ValueError | TypeError):
        return True  # the driver could not send a value (NUL in text, unadaptable type)
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return False
        if isinstance(exc, OperationalError):
            return dialect.refuses(exc)
        return True
    return False


def first_line(exc: BaseException) -> str:
    """Return the first line of the driver's message of ``exc`` (or its type's name)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
