"""One batch's transaction, the same on every database: what it reads and writes, in the
order of the plan, with the stored offsets and counts; what differs by database is its
:class:`~models.store.dialect.Dialect`'s."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from models.columns import ColumnKind
from models.registry import VERSION_COLUMNS, EntitySpec
from models.store.dialect import Dialect, first_line, is_row_fault
from models.store.schema import (
    changelogs_table,
    logs_table,
    offsets_table,
    public_columns,
    reads_back_as_written,
)
from models.store.statements import (
    key_params,
    new_version_params,
    patch_statement,
    soft_delete_statement,
)
from streams.core.decisions import Delete, Upsert
from streams.core.guard import Plan, StoredVersions
from streams.core.records import EntityKey, Version, first_of


@dataclass(frozen=True, slots=True)
class Refusal:
    """A write the database refused (constraint, type, length), with its message."""

    write: Upsert | Delete
    message: str


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """Run the block in a savepoint: released if it succeeds, rolled back to if it fails.

    If the rollback to it fails too, the error of the block is raised, not the rollback's:
    the database ended the whole transaction, savepoint included (InnoDB rolls a deadlock's
    victim back entirely, then says the savepoint "does not exist"), and the block's error
    is the one that says why (a deadlock: a passing failure; the batch is retried).
    """
    nested = conn.begin_nested()
    try:
        yield
    except BaseException as exc:
        try:
            if nested.is_active:  # not after the connection was lost: nothing to roll back
                nested.rollback()
        except SQLAlchemyError:
            raise exc from None
        raise
    nested.commit()


class StoreTransaction:
    """The operations of one batch, inside one open transaction."""

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    def next_offsets(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Return (and lock) the stored next offset of each partition that has one."""
        t = offsets_table
        query = (
            select(t.c.partition, t.c.next_offset)
            .where(t.c.consumer_group == group, t.c.topic == topic)
            .where(t.c.partition.in_(sorted(set(partitions))))
            .with_for_update()
        )
        return {int(p): int(o) for p, o in self.conn.execute(query)}

    def version_floor(self, topic: str) -> int | None:
        """Return the least timestamp versions of ``topic``'s records take (None: none), as
        set when the topic was found recreated (``SqlStore.restart_log``)."""
        t = logs_table
        floor = self.conn.execute(select(t.c.version_floor).where(t.c.topic == topic)).scalar()
        return None if floor is None else int(floor)

    def serialize(self, spec: EntitySpec, *, exclusive: bool) -> None:
        """Keep other transactions of this entity from writing the same keys meanwhile.

        Batches of one partition are serialised by the lock on their stored offsets. Records
        keyed by their entity key put each key in one partition, so such batches share a lock
        (``exclusive=False``) and run side by side (apply lanes, workers). A batch with a
        record keyed otherwise may write keys another partition writes too: it takes the
        entity's lock alone. Row locks would not do: a key absent from the table and its
        tombstones has no row to lock, and a delete racing an insert of it would resurrect
        it. The lock is the dialect's (:meth:`~models.store.dialect.Dialect.lock_entity`): one
        advisory lock per entity and transaction on PostgreSQL; SQLite's writes are serialised
        already (``BEGIN IMMEDIATE``).
        """
        self.dialect.lock_entity(self.conn, spec, exclusive=exclusive)

    def current(
        self,
        spec: EntitySpec,
        keys: Sequence[EntityKey],
        *,
        at_least: Mapping[EntityKey, Version] | None = None,
    ) -> StoredVersions:
        """Return the row and tombstone versions of ``keys`` (see :meth:`serialize`).

        With ``at_least`` (the oldest version of each key in the batch), only versions at least
        that new are read (PostgreSQL): an older stored version changes no outcome, since every
        event of the key is newer, and most keys of a stream in order are such keys. Every
        tombstone of the keys is read still: the writes clear the tombstones of the keys that
        have one (``Plan.clear_tombstones``), and only those.
        """
        if not keys:
            return StoredVersions({}, set())
        return self.dialect.read_versions(self.conn, spec, keys, at_least)

    def rows_of(self, spec: EntitySpec, keys: Sequence[EntityKey]) -> dict[EntityKey, Any]:
        """Return the public columns (see :func:`public_columns`) of the rows of ``keys`` as
        this transaction sees them (absent keys left out)."""
        found: dict[EntityKey, Any] = {}
        if not keys:
            return found
        key_cols = [spec.table.c[c] for c in spec.key_columns]
        columns = [spec.table.c[c] for c in public_columns(spec.table)]
        for where in self.dialect.key_filters(key_cols, keys):
            for row in self.conn.execute(select(*columns).where(where)).mappings():
                found[spec.key_of(row)] = dict(row)
        return found

    def write(
        self, spec: EntitySpec, plan: Plan, *, returning: bool = False
    ) -> tuple[list[Refusal], dict[EntityKey, Mapping[str, Any]]]:
        """Carry out ``plan``; return the writes the database refused (the rest commit).

        With ``returning``, also return the rows the upserts and patches wrote (and, with soft
        deletes, the rows the deletes marked), by key (an upsert that a newer version in the
        table stopped is not among them).

        All writes go in one savepoint; if that fails for a reason a row can cause (a
        constraint, a value the driver cannot send), they are retried one savepoint each,
        so a bad row is isolated without losing the others. A lost connection or a failing
        server raises instead: the batch is retried and holds its offsets. A table that no
        longer fits the model refuses every row; those go to the dead letters with the
        database's message, and can be redriven after the fix.
        """
        upserts = list(plan.upserts.values())
        patches = list(plan.patches.values())
        deletes = list(plan.deletes.values())
        written: dict[EntityKey, Mapping[str, Any]] = {}
        try:
            with savepoint(self.conn):
                written = self._write(spec, upserts, patches, deletes, plan, returning)
            return [], written
        except Exception as exc:
            if not is_row_fault(exc, self.dialect):
                raise
        written = {}
        refused: list[Refusal] = []
        steps: list[tuple[list[Upsert], list[Upsert], list[Delete]]] = [
            *(([u], [], []) for u in upserts),
            *(([], [u], []) for u in patches),
            *(([], [], [d]) for d in deletes),
        ]
        for one_upsert, one_patch, one_delete in steps:
            try:
                with savepoint(self.conn):
                    written.update(
                        self._write(spec, one_upsert, one_patch, one_delete, plan, returning)
                    )
            except Exception as exc:
                if not is_row_fault(exc, self.dialect):
                    raise
                write: Upsert | Delete = (one_upsert or one_patch or one_delete)[0]
                refused.append(Refusal(write, first_line(exc)))
        return refused, written

    def _write(
        self,
        spec: EntitySpec,
        upserts: Sequence[Upsert],
        patches: Sequence[Upsert],
        deletes: Sequence[Delete],
        plan: Plan,
        returning: bool,
    ) -> dict[EntityKey, Mapping[str, Any]]:
        """Write ``upserts``, ``patches`` and ``deletes`` (all of ``plan``'s, or one of them) in
        the plan's order (see :class:`~streams.core.guard.Plan`); return the rows the upserts
        and patches wrote and, with soft deletes, the rows the deletes marked."""
        if plan.recreated:
            again = [u.key for u in upserts if u.key in plan.recreated]
            self._delete_keys(spec.table, spec.key_columns, again)
        if returning and _rows_known(spec, upserts, patches, deletes):
            # What the cache needs is the rows as written (measured: building them from
            # RETURNING was about 4 % of the worker's time, beside what PostgreSQL spends).
            self._upsert(spec, upserts, False)
            written: dict[EntityKey, Mapping[str, Any]] = {u.key: u.row for u in upserts}
            returning = False
        else:
            written = self._upsert(spec, upserts, returning)
        if patches:
            written.update(self._patch(spec, patches, returning))
        # Every tombstone of a key written is older than the write (resolve() skipped it
        # otherwise): gone with it. The keys that have one are known (``current``).
        tombstoned = plan.clear_tombstones
        self._clear_tombstones(spec, [w.key for w in (*upserts, *patches) if w.key in tombstoned])
        if spec.soft_delete is not None:
            written.update(self._soft_delete(spec, deletes, returning))
        else:
            self._delete(spec, deletes)
        return written

    def _upsert(
        self, spec: EntitySpec, writes: Sequence[Upsert], returning: bool
    ) -> dict[EntityKey, Mapping[str, Any]]:
        """Upsert ``writes`` (one statement per set of columns); return the rows written (their
        public columns, :func:`public_columns`)."""
        shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for write in writes:
            row = write.row
            shape = tuple(row)
            values = shapes.get(shape)
            if values is None:
                values = shapes[shape] = []
            values.append((*row.values(), *write.version))
        written: dict[EntityKey, Mapping[str, Any]] = {}
        for shape, values in shapes.items():
            columns = (*shape, *VERSION_COLUMNS)
            got = self.dialect.upsert(self.conn, spec, columns, values, returning=returning)
            for row in got:
                written[spec.key_of(row)] = row
        if returning and not self.dialect.upsert_returns_rows:
            written = self.rows_of(spec, [w.key for w in writes])
        return written

    def _delete(self, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        if writes:
            self.dialect.delete(self.conn, spec, writes)

    def _patch(
        self, spec: EntitySpec, writes: Sequence[Upsert], returning: bool
    ) -> dict[EntityKey, dict[str, Any]]:
        """Update the columns each partial update carries, on rows the table has (one
        executemany per set of columns), with the version guard.

        An UPDATE, not the upsert: ``INSERT ... ON CONFLICT`` checks NOT NULL on the row it
        would insert before it finds the conflict, so a patch without every NOT NULL column
        would be refused even though the row exists.
        """
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        allowed = set(spec.update_columns)
        for write in writes:
            shape = tuple(c for c in write.row if c in allowed)
            params = {f"mirror_set_{c}": write.row[c] for c in shape}
            params.update(key_params(spec, write.key))
            params.update(new_version_params(write.version))
            shapes.setdefault(shape, []).append(params)
        for shape, rows in shapes.items():
            self.conn.execute(patch_statement(spec.table, spec.key_columns, shape), rows)
        return self.rows_of(spec, [w.key for w in writes]) if returning else {}

    def _soft_delete(
        self, spec: EntitySpec, writes: Sequence[Delete], returning: bool
    ) -> dict[EntityKey, dict[str, Any]]:
        """Mark the rows of ``writes`` deleted (their ``__soft_delete__`` column set to the
        delete record's time, with the version guard) and write their tombstones, which keep
        older events of keys the table has no row for from creating them."""
        if not writes:
            return {}
        assert spec.soft_delete is not None
        column = spec.table.c[spec.soft_delete]
        as_datetime = spec.soft_delete_kind is ColumnKind.DATETIME
        aware = bool(getattr(column.type, "timezone", False))
        params = []
        for w in writes:
            assert w.version is not None  # resolve() gives every delete a version
            millis = first_of(w.record).timestamp
            at: Any = millis
            if as_datetime:
                at = datetime.fromtimestamp(millis / 1000, UTC)
                if not aware:
                    at = at.replace(tzinfo=None)
            params.append(
                {
                    **key_params(spec, w.key),
                    "mirror_deleted_at": at,
                    **new_version_params(w.version),
                }
            )
        statement = soft_delete_statement(spec.table, spec.key_columns, column.key)
        self.conn.execute(statement, params)
        self.dialect.write_tombstones(self.conn, spec, writes)
        return self.rows_of(spec, [w.key for w in writes]) if returning else {}

    def _clear_tombstones(self, spec: EntitySpec, keys: Sequence[EntityKey]) -> None:
        self._delete_keys(spec.tombstone_table, spec.key_columns, keys)

    def _delete_keys(
        self, table: Table, key_columns: tuple[str, ...], keys: Sequence[EntityKey]
    ) -> None:
        if keys:
            self.dialect.delete_keys(self.conn, table, key_columns, keys)

    def advance(self, group: str, topic: str, next_offsets: Mapping[int, int]) -> None:
        """Store the next offset per partition (never moving one backwards)."""
        if not next_offsets:
            return
        rows = [
            {"consumer_group": group, "topic": topic, "partition": p, "next_offset": o}
            for p, o in sorted(next_offsets.items())
        ]
        self.dialect.insert_many(self.conn, self.dialect.bookkeeping.offsets, rows)

    def changelog_id(self, group: str, topic: str) -> str | None:
        """Return the id of the changelog ``topic`` the rows were last written to whole."""
        t = changelogs_table
        query = select(t.c.topic_id).where(t.c.consumer_group == group, t.c.topic == topic)
        found = self.conn.execute(query).scalar_one_or_none()
        return None if found is None else str(found)

    def note_changelog(self, group: str, topic: str, topic_id: str) -> None:
        """Record that the rows are written to the changelog ``topic`` of id ``topic_id``."""
        row = {"consumer_group": group, "topic": topic, "topic_id": topic_id}
        self.conn.execute(self.dialect.bookkeeping.changelog, [row])

    def has_rows(self, spec: EntitySpec) -> bool:
        """Tell whether the entity's table has any row (soft-deleted ones too)."""
        return self.conn.execute(select(spec.table.c[spec.key_column]).limit(1)).first() is not None

    def row_pages(self, spec: EntitySpec, size: int) -> Iterator[list[dict[str, Any]]]:
        """Yield every row's public columns (soft-deleted rows too), ``size`` at a time, in key
        order: one query per page, so a large table is never held whole."""
        keys = [spec.table.c[c] for c in spec.key_columns]
        key = keys[0] if len(keys) == 1 else tuple_(*keys)
        columns = [spec.table.c[c] for c in public_columns(spec.table)]
        after: Any = None
        while True:
            query = select(*columns).order_by(*keys).limit(size)
            if after is not None:
                query = query.where(key > (after if len(keys) == 1 else tuple_(*after)))
            page = [dict(row) for row in self.conn.execute(query).mappings()]
            if not page:
                return
            yield page
            after = spec.key_of(page[-1])

    def add_counts(self, group: str, counts: Mapping[tuple[str, str], int]) -> None:
        """Add outcome counts per (topic, outcome)."""
        if not counts:
            return
        rows = [
            {"consumer_group": group, "topic": topic, "outcome": outcome, "count": n}
            for (topic, outcome), n in sorted(counts.items())
        ]
        self.dialect.insert_many(self.conn, self.dialect.bookkeeping.counts, rows)


def _rows_known(
    spec: EntitySpec,
    upserts: Sequence[Upsert],
    patches: Sequence[Upsert],
    deletes: Sequence[Delete],
) -> bool:
    """Whether the rows these writes leave are known without reading them back: upserts only
    (a patch merges into a row, a soft delete marks one), each naming every public column of
    an entity whose values come back as written (:func:`reads_back_as_written`). Every
    upsert of a plan is written: its versions were read under the entity's lock."""
    if patches or (deletes and spec.soft_delete) or not reads_back_as_written(spec.table):
        return False
    count = len(public_columns(spec.table))
    return all(len(u.row) == count for u in upserts)
