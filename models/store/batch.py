"""One batch's transaction: read versions and offsets, write the plan, store offsets and counts."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    any_,
    bindparam,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import (
    DBAPIError,
    OperationalError,
)

from models.columns import ColumnKind
from models.registry import VERSION_COLUMNS, EntitySpec
from models.store.postgres_copy import copy_text
from models.store.schema import (
    changelogs_table,
    logs_table,
    offsets_table,
    public_columns,
    reads_back_as_written,
)
from models.store.statements import (
    _CHUNK,
    COPY_FROM_ROWS,
    ENTITY_LOCK_SPACE,
    KEY_LOOKUP_JOINS,
    _changelog_upsert,
    _counts_upsert,
    _delete_query,
    _delete_staging_sql,
    _entity_lock_id,
    _key_stage_sql,
    _new_version_params,
    _offsets_upsert,
    _patch_statement,
    _soft_delete_statement,
    _staging_sql,
    _tombstone_upsert,
    _upsert_statement,
    _values_template,
    _version,
    _version_values,
    _versions_query,
)
from streams.core.guard import Current, Plan, StoredVersions
from streams.core.routing import Delete, EntityKey, Upsert, Version, first_of


@dataclass(frozen=True, slots=True)
class Refusal:
    """A write the database refused (constraint, type, length), with its message."""

    write: Upsert | Delete
    message: str


class StoreTransaction:
    """The operations of one batch, inside one open transaction."""

    def __init__(self, conn: Connection, dialect: str) -> None:
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

        The same round trip sets the transaction's planner to join by nested loops only: every
        join of a batch (its staged keys against the entity and tombstone tables) looks up a
        few thousand keys by primary key, and PostgreSQL's default costs (``random_page_cost``
        4, for spinning disks) picked a hash join that reads the whole table instead, a cost
        that grew with the table (measured at 100,000 rows: 54 against 22 ms a batch, the
        version read; a third of PostgreSQL's time per event; BENCHMARKS.md).

        Batches of one partition are serialised by the lock on their stored offsets. Records
        keyed by their entity key put each key in one partition, so such batches share a lock
        (``exclusive=False``) and run side by side (apply lanes, workers). A batch with a
        record keyed otherwise may write keys another partition writes too: it takes the
        entity's lock alone. Row locks would not do: a key absent from the table and its
        tombstones has no row to lock, and a delete racing an insert of it would resurrect
        it. One advisory lock per entity and transaction (PostgreSQL; SQLite's writes are
        serialised already, ``BEGIN IMMEDIATE``).
        """
        if self.dialect != "postgresql":
            return
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        self._fetch(
            f"{KEY_LOOKUP_JOINS} SELECT {function}(%(space)s, %(entity)s)",
            {"space": ENTITY_LOCK_SPACE, "entity": _entity_lock_id(spec.table.name)},
        )

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
        found: dict[EntityKey, Current] = {}
        if not keys:
            return StoredVersions({}, set())
        if self.dialect == "postgresql":
            if at_least is not None:
                rows, tombs = self._newer_versions(spec, keys, at_least)
            else:
                params = {"keys": list(keys)}
                rows = self._fetch(_versions_query(spec.table, spec.key_column), params)
                tombs = self._fetch(_versions_query(spec.tombstone_table, spec.key_column), params)
            newest: dict[EntityKey, Version] = {row[0]: row[1:] for row in rows}
            # Which keys have a row is known only when every row was read.
            present = set(newest) if at_least is None else set()
            tombstoned = set()
            for tomb in tombs:
                key = tomb[0]
                tombstoned.add(key)
                version = tomb[1:]
                known = newest.get(key)
                if known is None or version > known:
                    newest[key] = version
            return StoredVersions(newest, tombstoned, present)
        for table, is_row in ((spec.table, True), (spec.tombstone_table, False)):
            key_col = table.c[spec.key_column]
            cols = [key_col, *(table.c[c] for c in VERSION_COLUMNS)]
            for where in self._key_filters(key_col, keys):
                query = select(*cols).where(where).with_for_update()
                for row in self.conn.execute(query):
                    key = row[0]
                    was = found.get(key, Current())
                    version = _version(row)
                    found[key] = (
                        Current(row=version, tombstone=was.tombstone)
                        if is_row
                        else Current(row=was.row, tombstone=version)
                    )
        return StoredVersions.of(found)

    def rows_of(self, spec: EntitySpec, keys: Sequence[EntityKey]) -> dict[EntityKey, Any]:
        """Return the public columns (see :func:`public_columns`) of the rows of ``keys`` as
        this transaction sees them (absent keys left out)."""
        found: dict[EntityKey, Any] = {}
        key_col = spec.table.c[spec.key_column]
        columns = [spec.table.c[c] for c in public_columns(spec.table)]
        for where in self._key_filters(key_col, keys):
            for row in self.conn.execute(select(*columns).where(where)).mappings():
                found[row[spec.key_column]] = dict(row)
        return found

    def _key_filters(self, key_col: Any, keys: Sequence[EntityKey]) -> list[Any]:
        """Return WHERE clauses that together select ``keys`` of ``key_col``."""
        if not keys:
            return []
        if self.dialect == "postgresql":
            # One array parameter instead of thousands of IN placeholders to compile.
            keys_param = bindparam("keys", list(keys), type_=postgresql.ARRAY(key_col.type))
            return [key_col == any_(keys_param)]
        return [key_col.in_(list(keys[i : i + _CHUNK])) for i in range(0, len(keys), _CHUNK)]

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
            with self.conn.begin_nested():
                written = self._write(spec, upserts, patches, deletes, plan, returning)
            return [], written
        except Exception as exc:
            if not _row_fault(exc):
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
                with self.conn.begin_nested():
                    written.update(
                        self._write(spec, one_upsert, one_patch, one_delete, plan, returning)
                    )
            except Exception as exc:
                if not _row_fault(exc):
                    raise
                write: Upsert | Delete = (one_upsert or one_patch or one_delete)[0]
                refused.append(Refusal(write, _first_line(exc)))
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
            self._delete_keys(spec.table, spec.key_column, again)
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
            statement = self._upsert_statement(spec, columns)
            if self.dialect == "postgresql":
                if len(values) >= COPY_FROM_ROWS:
                    got = self._copy_upsert(spec, columns, values, returning)
                else:
                    got = self._execute_values(statement, values, columns, returning=returning)
                for row in got:
                    written[row[spec.key_column]] = row
            else:
                self.conn.execute(statement, [dict(zip(columns, v, strict=True)) for v in values])
        if returning and self.dialect != "postgresql":
            written = self.rows_of(spec, [w.key for w in writes])
        return written

    def _copy_upsert(
        self,
        spec: EntitySpec,
        columns: tuple[str, ...],
        values: Sequence[tuple[Any, ...]],
        returning: bool,
    ) -> list[dict[str, Any]]:
        """Upsert ``values`` through COPY into this session's staging table (PostgreSQL).

        The staging table is temporary (one per session, emptied at each commit) and has the
        entity table's columns without its constraints; the upsert from it carries the same
        version guard as the VALUES one. Errors are re-raised as SQLAlchemy's.
        """
        import io

        from psycopg2 import Error as PsycopgError

        create, copy, upsert, clear = _staging_sql(
            spec.table,
            spec.key_column,
            spec.update_columns,
            columns,
            returning,
        )
        kinds = spec.column_kinds
        text = copy_text(values, [kinds.get(c) for c in columns])
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(create)
            cursor.copy_expert(copy, io.StringIO(text), size=len(text) + 1)
            cursor.execute(upsert)
            got = cursor.fetchall() if returning else []
            names = [d[0] for d in cursor.description] if returning else []
            cursor.execute(clear)
        except PsycopgError as exc:
            raise DBAPIError.instance(upsert, None, exc, PsycopgError) from exc
        finally:
            cursor.close()
        return [dict(zip(names, row, strict=True)) for row in got]

    def _newer_versions(
        self, spec: EntitySpec, keys: Sequence[EntityKey], at_least: Mapping[EntityKey, Version]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Stage ``keys`` with their bounds by COPY, then read the versions at least as new.

        COPY, because psycopg2 turns a list parameter into an array literal element by element
        (measured: about 20 ms for 4,400 keys in four arrays, against 2 ms to stage them).
        """
        import io

        from psycopg2 import Error as PsycopgError

        create, copy, query = _key_stage_sql(spec.table, spec.tombstone_table, spec.key_column)
        key_kind = spec.column_kinds.get(spec.key_column)
        text = copy_text(
            [(k, *at_least[k]) for k in keys],
            [key_kind, ColumnKind.INTEGER, ColumnKind.INTEGER, ColumnKind.INTEGER],
        )
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(create)
            cursor.copy_expert(copy, io.StringIO(text), size=len(text) + 1)
            cursor.execute(query)
            found = cursor.fetchall()
        except PsycopgError as exc:
            raise DBAPIError.instance(query, None, exc, PsycopgError) from exc
        finally:
            cursor.close()
        rows = [found_row[1:] for found_row in found if not found_row[0]]
        tombs = [found_row[1:] for found_row in found if found_row[0]]
        return rows, tombs

    def _fetch(
        self, sql: str, params: Mapping[str, Any], *, rows: bool = True
    ) -> list[tuple[Any, ...]]:
        """Run a statement on the driver's cursor (PostgreSQL); errors re-raised as SQLAlchemy's."""
        from psycopg2 import Error as PsycopgError

        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if rows else []
        except PsycopgError as exc:
            raise DBAPIError.instance(sql, None, exc, PsycopgError) from exc
        finally:
            cursor.close()

    def _insert_many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute an INSERT for many rows: one statement on PostgreSQL, executemany on SQLite."""
        if self.dialect == "postgresql":
            _, columns = _values_template(statement, self.conn.dialect)
            self._execute_values(statement, [tuple(r[c] for c in columns) for r in rows], columns)
        else:
            self.conn.execute(statement, list(rows))

    def _execute_values(
        self,
        statement: Any,
        values: Sequence[tuple[Any, ...]],
        columns: tuple[str, ...],
        *,
        returning: bool = False,
    ) -> list[dict[str, Any]]:
        """Send all ``values`` (in ``columns`` order) of an INSERT as one VALUES statement.

        SQLAlchemy sends this upsert with psycopg2's execute_batch (pages of 100), about
        2.5 times slower than psycopg2's execute_values with one page per batch (measured:
        80 ms against 33 ms for 2,000 rows). With ``returning``, the statement returns the
        rows it wrote. Errors are re-raised as SQLAlchemy's, so the callers' handling (refused
        row, retriable outage) stays the same.
        """
        from psycopg2 import Error as PsycopgError
        from psycopg2.extras import execute_values

        template, order = _values_template(statement, self.conn.dialect, returning)
        if order != columns:
            index = [columns.index(c) for c in order]
            values = [tuple(v[i] for i in index) for v in values]
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            got = execute_values(
                cursor, template, values, page_size=max(1, len(values)), fetch=returning
            )
            if not returning:
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in got]
        except PsycopgError as exc:
            raise DBAPIError.instance(template, None, exc, PsycopgError) from exc
        finally:
            cursor.close()

    def _upsert_statement(self, spec: EntitySpec, columns: tuple[str, ...]) -> Any:
        return _upsert_statement(
            spec.table, spec.key_column, spec.update_columns, columns, self.dialect
        )

    def _delete(self, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        if not writes:
            return
        if self.dialect == "postgresql" and len(writes) >= COPY_FROM_ROWS:
            self._copy_delete(spec, writes)
            return
        self._delete_keys(spec.table, spec.key_column, [w.key for w in writes])
        self._write_tombstones(spec, writes)

    def _copy_delete(self, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        """Delete ``writes``' rows and write their tombstones through COPY (PostgreSQL)."""
        import io

        from psycopg2 import Error as PsycopgError

        create, copy, *statements = _delete_staging_sql(
            spec.table, spec.tombstone_table, spec.key_column
        )
        now = int(time.time() * 1000)
        values = []
        for w in writes:
            assert w.version is not None  # resolve() gives every delete a version
            values.append((w.key, *w.version, now))
        key_kind = spec.column_kinds.get(spec.key_column)
        text = copy_text(values, [key_kind, *[ColumnKind.INTEGER] * 4])
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(create)
            cursor.copy_expert(copy, io.StringIO(text), size=len(text) + 1)
            for statement in statements:
                cursor.execute(statement)
        except PsycopgError as exc:
            raise DBAPIError.instance(copy, None, exc, PsycopgError) from exc
        finally:
            cursor.close()

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
            params["mirror_key"] = write.key
            params.update(_new_version_params(write.version))
            shapes.setdefault(shape, []).append(params)
        for shape, rows in shapes.items():
            self.conn.execute(_patch_statement(spec.table, spec.key_column, shape), rows)
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
                {"mirror_key": w.key, "mirror_deleted_at": at, **_new_version_params(w.version)}
            )
        self.conn.execute(_soft_delete_statement(spec.table, spec.key_column, column.key), params)
        self._write_tombstones(spec, writes)
        return self.rows_of(spec, [w.key for w in writes]) if returning else {}

    def _write_tombstones(self, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        """Write the tombstones of ``writes`` (unless a newer one is there)."""
        now = int(time.time() * 1000)
        rows = []
        for w in writes:
            assert w.version is not None  # resolve() gives every delete a version
            rows.append({spec.key_column: w.key, **_version_values(w.version), "deleted_at": now})
        self._insert_many(
            _tombstone_upsert(spec.tombstone_table, spec.key_column, self.dialect), rows
        )

    def _clear_tombstones(self, spec: EntitySpec, keys: Sequence[EntityKey]) -> None:
        self._delete_keys(spec.tombstone_table, spec.key_column, keys)

    def _delete_keys(self, table: Table, key_column: str, keys: Sequence[EntityKey]) -> None:
        """Delete the rows of ``keys`` (one statement with an array on PostgreSQL)."""
        if not keys:
            return
        if self.dialect == "postgresql":
            self._fetch(_delete_query(table, key_column), {"keys": list(keys)}, rows=False)
            return
        key_col = table.c[key_column]
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            self.conn.execute(delete(table).where(key_col.in_(chunk)))

    def advance(self, group: str, topic: str, next_offsets: Mapping[int, int]) -> None:
        """Store the next offset per partition (never moving one backwards)."""
        if not next_offsets:
            return
        rows = [
            {"consumer_group": group, "topic": topic, "partition": p, "next_offset": o}
            for p, o in sorted(next_offsets.items())
        ]
        self._insert_many(_offsets_upsert(self.dialect), rows)

    def changelog_id(self, group: str, topic: str) -> str | None:
        """Return the id of the changelog ``topic`` the rows were last written to whole."""
        t = changelogs_table
        query = select(t.c.topic_id).where(t.c.consumer_group == group, t.c.topic == topic)
        found = self.conn.execute(query).scalar_one_or_none()
        return None if found is None else str(found)

    def note_changelog(self, group: str, topic: str, topic_id: str) -> None:
        """Record that the rows are written to the changelog ``topic`` of id ``topic_id``."""
        row = {"consumer_group": group, "topic": topic, "topic_id": topic_id}
        self.conn.execute(_changelog_upsert(self.dialect), [row])

    def has_rows(self, spec: EntitySpec) -> bool:
        """Tell whether the entity's table has any row (soft-deleted ones too)."""
        return self.conn.execute(select(spec.table.c[spec.key_column]).limit(1)).first() is not None

    def row_pages(self, spec: EntitySpec, size: int) -> Iterator[list[dict[str, Any]]]:
        """Yield every row's public columns (soft-deleted rows too), ``size`` at a time, in key
        order: one query per page, so a large table is never held whole."""
        key = spec.table.c[spec.key_column]
        columns = [spec.table.c[c] for c in public_columns(spec.table)]
        after: Any = None
        while True:
            query = select(*columns).order_by(key).limit(size)
            if after is not None:
                query = query.where(key > after)
            page = [dict(row) for row in self.conn.execute(query).mappings()]
            if not page:
                return
            yield page
            after = page[-1][spec.key_column]

    def add_counts(self, group: str, counts: Mapping[tuple[str, str], int]) -> None:
        """Add outcome counts per (topic, outcome)."""
        if not counts:
            return
        rows = [
            {"consumer_group": group, "topic": topic, "outcome": outcome, "count": n}
            for (topic, outcome), n in sorted(counts.items())
        ]
        self._insert_many(_counts_upsert(self.dialect), rows)


#: What SQLite says of a table that no longer fits the model. sqlite3 raises OperationalError
#: for these as for a busy database (PostgreSQL raises ProgrammingError), so only the message
#: tells the table's refusal from a passing failure.
_SQLITE_SCHEMA_ERRORS = ("no such table", "no such column", "has no column named")


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


def _row_fault(exc: BaseException) -> bool:
    """Tell whether ``exc`` can come from one row's values rather than from the database."""
    if isinstance(exc, ValueError | TypeError):
        return True  # the driver could not send a value (NUL in text, unadaptable type)
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return False
        if isinstance(exc, OperationalError):
            return is_sqlite_schema_error(exc)
        return True
    return False


def is_sqlite_schema_error(exc: DBAPIError) -> bool:
    """Tell whether ``exc`` is SQLite saying that a table does not fit (see above)."""
    return isinstance(exc.orig, sqlite3.OperationalError) and any(
        text in str(exc.orig) for text in _SQLITE_SCHEMA_ERRORS
    )


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
