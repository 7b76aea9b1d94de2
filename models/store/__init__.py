"""The SQL store: carries out a batch's plan in one transaction, on PostgreSQL, MySQL/MariaDB
or SQLite.

:class:`SqlStore` is the entry point (schema creation, one transaction per batch, the reads of
the HTTP pages and the command line). ``batch`` is one batch's transaction
(:class:`StoreTransaction`), the same on every database; what differs by database is behind
one small interface, ``dialect`` (:class:`~models.store.dialect.Dialect`), with one module
per database (``postgres``, ``sqlite``), chosen by name in ``engine``. ``schema`` holds the
bookkeeping tables; ``statements`` and ``on_conflict`` the SQL databases share;
``postgres_copy`` PostgreSQL's COPY text format.

Per batch, inside one transaction: read the consumer group's stored offsets (locking their
rows) and the stored versions of the batch's keys (under the entity's lock), write the plan
set-based (upserts as one version-guarded ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` per
set of columns: on PostgreSQL from rows staged by COPY, or one multi-row ``VALUES`` for a
few; on SQLite an executemany; deletes and tombstones likewise), advance the stored offsets
and add the outcome counts. Never a read followed by a write per event.

Guarantee: everything a batch does commits together or not at all, and the stored offset
of a partition moves with it. A record below the stored offset has had its effect already, so
a replay after a crash changes nothing and is not counted twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Engine, delete, func, inspect, select, tuple_
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
    SQLAlchemyError,
)

from models.registry import EntitySpec
from models.store.batch import Refusal, StoreTransaction
from models.store.dialect import IN_BATCH, first_line
from models.store.engine import create_store_engine, dialect_named
from models.store.postgres import COPY_FROM_ROWS, ENTITY_LOCK_SPACE
from models.store.schema import (
    bookkeeping,
    logs_table,
    offsets_table,
    outcomes_table,
    public_columns,
)
from streams.core.errors import StoreConflict, StoreError, StoreUnavailableError
from streams.core.records import Partition

__all__ = [
    "COPY_FROM_ROWS",
    "ENTITY_LOCK_SPACE",
    "KnownLog",
    "Refusal",
    "RestartedLog",
    "SqlStore",
    "StoreTransaction",
    "create_store_engine",
    "offsets_table",
    "outcomes_table",
    "public_columns",
]


@dataclass(frozen=True, slots=True)
class KnownLog:
    """What the store knows of the log a topic is read from."""

    topic_id: str | None
    """Kafka's id of the topic (None: not known, a broker without ids)."""
    version_floor: int | None
    """The least timestamp versions of this log's records take (None: none)."""


@dataclass(frozen=True, slots=True)
class RestartedLog:
    """What :meth:`SqlStore.restart_log` did."""

    dropped: dict[tuple[str, int], int]
    """The offsets stored for the old log, by (consumer group, partition)."""
    version_floor: int | None


class SqlStore:
    """Entry point to the mirror's database: tables, batch transactions, and reads.

    Errors come out wrapped: :class:`StoreUnavailableError` (retriable: connection lost,
    server down, lock timeout) or :class:`StoreError` (not retriable: a constraint, a value,
    a missing table, column or privilege), naming what was done.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = dialect_named(engine.dialect.name)
        self._ddl_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> SqlStore:
        """Build a store for an SQLAlchemy URL."""
        return cls(create_store_engine(url))

    def create_tables(self, specs: Sequence[EntitySpec]) -> None:
        """Create missing tables (entity, tombstone, bookkeeping); existing ones are kept.

        One creation at a time, in this process and across workers (an advisory lock on
        PostgreSQL): two ``CREATE TABLE IF NOT EXISTS`` of one table at once make one of
        them fail on PostgreSQL's catalog.
        """
        with self._ddl_lock, self._wrapped("create tables"), self.engine.begin() as conn:
            self.dialect.lock(conn, "entity-mirror ddl")
            bookkeeping.create_all(conn, checkfirst=True)
            for spec in specs:
                spec.table.create(conn, checkfirst=True)
                spec.tombstone_table.create(conn, checkfirst=True)
            tables = [*bookkeeping.sorted_tables]
            tables += [t for spec in specs for t in (spec.table, spec.tombstone_table)]
            self.dialect.prepare(conn, specs, tables)

    def missing_columns(self, specs: Sequence[EntitySpec]) -> dict[str, list[Column[Any]]]:
        """Return, per existing table of ``specs``, the declared columns it does not have.

        ``create_tables`` leaves an existing table as it is; one made for an older model (or
        by hand) lacks what the model declares since, and every write to it would fail.
        """
        found: dict[str, list[Column[Any]]] = {}
        with self._wrapped("read the tables' columns"), self.engine.connect() as conn:
            inspector = inspect(conn)
            for spec in specs:
                for table in (spec.table, spec.tombstone_table):
                    if not inspector.has_table(table.name, schema=table.schema):
                        continue
                    have = {c["name"] for c in inspector.get_columns(table.name, table.schema)}
                    missing = [c for c in table.columns if c.name not in have]
                    if missing:
                        found[table.fullname] = missing
        return found

    @contextmanager
    def transaction(self, what: str) -> Iterator[StoreTransaction]:
        """Open one transaction for a batch; commit on success, roll back on any error."""
        with self._wrapped(what), self.engine.begin() as conn:
            # An option of this checkout only (see models.store.mysql: no DDL in a batch).
            conn.execution_options(**{IN_BATCH: True})
            yield StoreTransaction(conn, self.dialect)

    def rows(self, spec: EntitySpec) -> dict[Any, dict[str, Any]]:
        """Return every row of the entity's table keyed by entity key (tests, CLI)."""
        with self._wrapped(f"read {spec.kind}"), self.engine.connect() as conn:
            result = conn.execute(select(spec.table))
            return {spec.key_of(row): dict(row) for row in result.mappings()}

    def get(self, spec: EntitySpec, key: Any) -> dict[str, Any] | None:
        """Return the row of ``key`` (a tuple for a composite key), or None."""
        parts = key if spec.composite else (key,)
        match = [spec.table.c[c] == v for c, v in zip(spec.key_columns, parts, strict=True)]
        with self._wrapped(f"read {spec.kind}"), self.engine.connect() as conn:
            query = select(spec.table).where(*match)
            row = conn.execute(query).mappings().first()
            return dict(row) if row is not None else None

    def page(
        self, spec: EntitySpec, *, limit: int, after: Any = None, with_deleted: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Return up to ``limit`` rows with keys after ``after`` (a tuple for a composite key),
        in key order, and the total; without ``with_deleted``, soft-deleted rows
        (``__soft_delete__``) are left out of both."""
        keys = [spec.table.c[c] for c in spec.key_columns]
        key: Any = keys[0] if len(keys) == 1 else tuple_(*keys)
        query = select(spec.table).order_by(*keys).limit(limit)
        counting = select(func.count()).select_from(spec.table)
        if spec.soft_delete is not None and not with_deleted:
            live = spec.table.c[spec.soft_delete].is_(None)
            query, counting = query.where(live), counting.where(live)
        if after is not None:
            query = query.where(key > (tuple_(*after) if spec.composite else after))
        with self._wrapped(f"read {spec.kind}"), self.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
            total = int(conn.execute(counting).scalar_one())
        return rows, total

    def count(self, spec: EntitySpec, *, deleted: bool = False) -> int:
        """Count the entity's rows; with ``deleted``, only the soft-deleted ones."""
        query = select(func.count()).select_from(spec.table)
        if deleted:
            if spec.soft_delete is None:
                return 0
            query = query.where(spec.table.c[spec.soft_delete].is_not(None))
        with self._wrapped(f"count {spec.kind}"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def outcome_counts(self, group: str) -> dict[tuple[str, str], int]:
        """Return the durable outcome counts of ``group`` per (topic, outcome)."""
        t = outcomes_table
        with self._wrapped("read outcome counts"), self.engine.connect() as conn:
            query = select(t.c.topic, t.c.outcome, t.c.count).where(t.c.consumer_group == group)
            return {(topic, outcome): int(n) for topic, outcome, n in conn.execute(query)}

    def stored_offsets(self, group: str) -> dict[Partition, int]:
        """Return the stored next offset per (topic, partition) of ``group``."""
        t = offsets_table
        with self._wrapped("read stored offsets"), self.engine.connect() as conn:
            query = select(t.c.topic, t.c.partition, t.c.next_offset).where(
                t.c.consumer_group == group
            )
            return {Partition(topic, int(p)): int(o) for topic, p, o in conn.execute(query)}

    def known_logs(self) -> dict[str, KnownLog]:
        """Return what is known of each topic's log: its id and its version floor."""
        t = logs_table
        with self._wrapped("read the known logs"), self.engine.connect() as conn:
            query = select(t.c.topic, t.c.topic_id, t.c.version_floor)
            return {
                topic: KnownLog(topic_id, None if floor is None else int(floor))
                for topic, topic_id, floor in conn.execute(query)
            }

    def note_log(self, topic: str, topic_id: str | None) -> None:
        """Record the id of the log ``topic`` is read from, unless another id is known."""
        row = {"topic": topic, "topic_id": topic_id}
        with self._wrapped(f"note the log of {topic}"), self.engine.begin() as conn:
            conn.execute(self.dialect.bookkeeping.log, [row])

    def restart_log(
        self,
        topic: str,
        topic_id: str,
        was: str | None,
        specs: Sequence[EntitySpec],
    ) -> RestartedLog | None:
        """Record that ``topic`` is a new log (id ``topic_id``, where ``was`` was known).

        In one transaction: the offsets stored for the old log are dropped, for every consumer
        group (they would skip the new log's records); and the versions of records read from
        the new log get a floor above every version of ``specs``' rows and tombstones (those
        whose versions are timestamps), so that no row of the old log outranks them. None when
        another worker recorded it first.
        """
        t, o = logs_table, offsets_table
        with self._wrapped(f"restart the log of {topic}"), self.engine.begin() as conn:
            self.dialect.lock(conn, "entity-mirror logs")
            row = conn.execute(
                select(t.c.topic_id, t.c.version_floor).where(t.c.topic == topic).with_for_update()
            ).first()
            if row is None or row.topic_id != was:
                return None
            floor = row.version_floor
            for spec in specs:
                if spec.version_field is not None:
                    continue
                for table in (spec.table, spec.tombstone_table):
                    newest = conn.execute(select(func.max(table.c.mirror_version))).scalar()
                    if newest is not None and (floor is None or int(newest) + 1 > floor):
                        floor = int(newest) + 1
            query = select(o.c.consumer_group, o.c.partition, o.c.next_offset).where(
                o.c.topic == topic
            )
            dropped = {(g, int(p)): int(n) for g, p, n in conn.execute(query)}
            conn.execute(delete(o).where(o.c.topic == topic))
            conn.execute(
                t.update().where(t.c.topic == topic).values(topic_id=topic_id, version_floor=floor)
            )
            return RestartedLog(dropped, floor)

    def reset_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Set a partition's stored offset to ``offset``, even below what it was: its log does
        not hold the offsets stored for it (the broker lost records past its end)."""
        o = offsets_table
        with (
            self._wrapped(f"reset the offset of {topic}[{partition}]"),
            self.engine.begin() as conn,
        ):
            conn.execute(
                o.update()
                .where(o.c.consumer_group == group, o.c.topic == topic, o.c.partition == partition)
                .values(next_offset=offset)
            )

    def purge_tombstones(self, spec: EntitySpec, older_than_ms: int) -> int:
        """Delete tombstones written before ``older_than_ms``; return how many."""
        t = spec.tombstone_table
        with self._wrapped(f"purge {spec.kind} tombstones"), self.engine.begin() as conn:
            result = conn.execute(delete(t).where(t.c.deleted_at < older_than_ms))
            return int(result.rowcount or 0)

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    @contextmanager
    def _wrapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except (IntegrityError, DataError, ProgrammingError, NotSupportedError) as exc:
            # Constraints, values, a table or privilege missing: no retry changes these.
            raise StoreError(f"{what}: database refused it: {first_line(exc)}") from exc
        except DBAPIError as exc:
            if not exc.connection_invalidated and self.dialect.refuses(exc):
                raise StoreError(f"{what}: database refused it: {first_line(exc)}") from exc
            if not exc.connection_invalidated and self.dialect.conflicts(exc):
                raise StoreConflict(f"{what}: {first_line(exc)}") from exc
            raise StoreUnavailableError(f"{what}: {first_line(exc)}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {first_line(exc)}") from exc
