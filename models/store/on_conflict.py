"""What the databases that take ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` share
(PostgreSQL, SQLite): the upserts, built from the database's own ``insert`` (once, cached), and
the writes made of them (:class:`OnConflictDialect`)."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, tuple_

from models.registry import VERSION_COLUMNS, EntitySpec
from models.store.dialect import BookkeepingUpserts
from models.store.schema import (
    changelogs_table,
    logs_table,
    offsets_table,
    outcomes_table,
)
from models.store.statements import tombstone_rows
from streams.core.decisions import Delete
from streams.core.records import EntityKey

#: A dialect's ``insert`` (``sqlalchemy.dialects.postgresql.insert``, ``...sqlite.insert``).
Insert = Callable[[Table], Any]


@functools.lru_cache(maxsize=256)
def row_upsert(
    insert: Insert,
    table: Table,
    key_columns: tuple[str, ...],
    update_columns: tuple[str, ...],
    columns: tuple[str, ...],
) -> Any:
    """Build (once per table and column set) the version-guarded upsert.

    It names only ``columns``: the others keep their default on create and their value on
    update (a model may have columns its events never set).
    """
    stmt = insert(table).values({c: bindparam(c) for c in columns})
    update = {c: stmt.excluded[c] for c in (*update_columns, *VERSION_COLUMNS) if c in columns}
    newer = tuple_(*(stmt.excluded[c] for c in VERSION_COLUMNS)) > tuple_(
        *(table.c[c] for c in VERSION_COLUMNS)
    )
    # The guard is also checked here: the row may have been inserted after our read.
    return stmt.on_conflict_do_update(index_elements=list(key_columns), set_=update, where=newer)


@functools.lru_cache(maxsize=256)
def tombstone_upsert(insert: Insert, tomb: Table, key_columns: tuple[str, ...]) -> Any:
    """Write a tombstone unless a newer one is there."""
    stmt = insert(tomb)
    newer = tuple_(*(stmt.excluded[c] for c in VERSION_COLUMNS)) > tuple_(
        *(tomb.c[c] for c in VERSION_COLUMNS)
    )
    update = {c: stmt.excluded[c] for c in (*VERSION_COLUMNS, "deleted_at")}
    return stmt.on_conflict_do_update(index_elements=list(key_columns), set_=update, where=newer)


def bookkeeping_upserts(insert: Insert) -> BookkeepingUpserts:
    """Build the upserts of the bookkeeping tables (see :class:`BookkeepingUpserts`)."""
    offsets = insert(offsets_table)
    counts = insert(outcomes_table)
    changelog = insert(changelogs_table)
    log = insert(logs_table)
    return BookkeepingUpserts(
        offsets=offsets.on_conflict_do_update(
            index_elements=["consumer_group", "topic", "partition"],
            set_={"next_offset": offsets.excluded.next_offset},
            where=offsets_table.c.next_offset < offsets.excluded.next_offset,
        ),
        counts=counts.on_conflict_do_update(
            index_elements=["consumer_group", "topic", "outcome"],
            set_={"count": outcomes_table.c.count + counts.excluded["count"]},
        ),
        changelog=changelog.on_conflict_do_update(
            index_elements=["consumer_group", "topic"],
            set_={"topic_id": changelog.excluded.topic_id},
        ),
        log=log.on_conflict_do_update(
            index_elements=["topic"],
            set_={"topic_id": log.excluded.topic_id},
            where=logs_table.c.topic_id.is_(None),
        ),
    )


class OnConflictDialect(ABC):
    """The part of a :class:`~models.store.dialect.Dialect` its ``INSERT ... ON CONFLICT``
    databases share: the bookkeeping upserts, tombstones, and deletes as deletes by key then
    tombstones (a database may do it faster)."""

    def __init__(self, insert: Insert) -> None:
        self.insert = insert
        self.bookkeeping = bookkeeping_upserts(insert)

    def prepare(
        self, conn: Connection, specs: Sequence[EntitySpec], tables: Sequence[Table]
    ) -> None:
        """Do nothing: every table these databases make or take keeps the guarantees."""
        return None

    def row_upsert(self, spec: EntitySpec, columns: tuple[str, ...]) -> Any:
        """Return the version-guarded upsert of ``spec``'s rows naming ``columns``."""
        return row_upsert(self.insert, spec.table, spec.key_columns, spec.update_columns, columns)

    def delete(self, conn: Connection, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        """Delete the rows of ``writes`` and write their tombstones."""
        self.delete_keys(conn, spec.table, spec.key_columns, [w.key for w in writes])
        self.write_tombstones(conn, spec, writes)

    def write_tombstones(
        self, conn: Connection, spec: EntitySpec, writes: Sequence[Delete]
    ) -> None:
        """Write the tombstones of ``writes`` (unless a newer one is there)."""
        statement = tombstone_upsert(self.insert, spec.tombstone_table, spec.key_columns)
        self.insert_many(conn, statement, tombstone_rows(spec, writes))

    @abstractmethod
    def delete_keys(
        self,
        conn: Connection,
        table: Table,
        key_columns: tuple[str, ...],
        keys: Sequence[EntityKey],
    ) -> None:
        """Delete the rows of ``keys`` (not empty) from ``table``."""

    @abstractmethod
    def insert_many(
        self, conn: Connection, statement: Any, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Execute an INSERT for many rows."""
