"""The store on PostgreSQL: a batch's rows staged by COPY and written by one guarded
``INSERT ... SELECT ... ON CONFLICT``, keys looked up by array or staged keys, an advisory lock
per entity; the SQL built once per table (cached) and sent on psycopg2's own cursor."""

from __future__ import annotations

import functools
import io
import re
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Table,
    any_,
    bindparam,
    create_engine,
    delete,
    func,
    select,
    tuple_,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import column as sa_column
from sqlalchemy.sql import table as sa_table

from models.columns import ColumnKind
from models.registry import VERSION_COLUMNS, EntitySpec
from models.store.on_conflict import OnConflictDialect
from models.store.postgres_copy import copy_text
from models.store.schema import public_columns
from streams.core.decisions import Delete
from streams.core.errors import StoreError
from streams.core.guard import StoredVersions
from streams.core.records import EntityKey, Version

#: First key of the advisory locks serialising an entity's writes (PostgresDialect.lock_entity).
ENTITY_LOCK_SPACE = 0x6D697272  # "mirr"
#: Upserts of at least this many rows go through COPY (see models/store/postgres_copy.py).
COPY_FROM_ROWS = 50
#: Set first in each batch's transaction: its joins look staged keys up by primary key (see
#: :meth:`PostgresDialect.lock_entity`).
KEY_LOOKUP_JOINS = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"

#: One placeholder of a compiled VALUES clause, with the cast SQLAlchemy adds to some types
#: (``%(prefs)s::JSON`` for a JSON column).
_PLACEHOLDER = r"%\(\w+\)s(?:::\w+)?"
_VALUES_CLAUSE = re.compile(rf" VALUES \(({_PLACEHOLDER}(?:, {_PLACEHOLDER})*)\)")

#: The most keys of a composite key in one row-value ``IN`` list (reads by key, off the bulk
#: paths).
_CHUNK = 500


class PostgresDialect(OnConflictDialect):
    """PostgreSQL (psycopg2), as :class:`~models.store.dialect.Dialect` describes."""

    name = "postgresql"
    upsert_returns_rows = True

    def __init__(self) -> None:
        super().__init__(postgresql.insert)

    def create_engine(self, url: URL) -> Engine:
        """Create the engine for ``url`` with the settings the mirror relies on."""
        return create_engine(
            url,
            # No pre-ping: a round trip per batch. A connection broken by a server restart
            # fails its batch with a retriable error, SQLAlchemy drops it, the retry reconnects.
            pool_size=5,
            max_overflow=5,
            # Batch UPDATE/DELETE executemany too, not only INSERTs.
            executemany_mode="values_plus_batch",
        )

    def lock(self, conn: Connection, name: str) -> None:
        """Take the advisory lock named ``name`` until the transaction ends."""
        assert "'" not in name  # a constant of ours, written into the SQL
        conn.execute(sql_text(f"SELECT pg_advisory_xact_lock(hashtext('{name}'))"))

    def lock_entity(self, conn: Connection, spec: EntitySpec, *, exclusive: bool) -> None:
        """Take the entity's advisory lock (one per entity and transaction), shared or
        exclusive (see ``StoreTransaction.serialize``).

        The same round trip sets the transaction's planner to join by nested loops only: every
        join of a batch (its staged keys against the entity and tombstone tables) looks up a
        few thousand keys by primary key, and PostgreSQL's default costs (``random_page_cost``
        4, for spinning disks) picked a hash join that reads the whole table instead, a cost
        that grew with the table (measured at 100,000 rows: 54 against 22 ms a batch, the
        version read; a third of PostgreSQL's time per event; BENCHMARKS.md).
        """
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        _fetch(
            conn,
            f"{KEY_LOOKUP_JOINS} SELECT {function}(%(space)s, %(entity)s)",
            {"space": ENTITY_LOCK_SPACE, "entity": _entity_lock_id(spec.table.name)},
        )

    def key_filters(self, columns: Sequence[Any], keys: Sequence[EntityKey]) -> list[Any]:
        """Return one clause with an array parameter (instead of thousands of IN placeholders
        to compile); for a composite key, one row-value ``IN`` per :data:`_CHUNK` keys."""
        if len(columns) > 1:
            row = tuple_(*columns)
            return [row.in_(list(keys[i : i + _CHUNK])) for i in range(0, len(keys), _CHUNK)]
        column = columns[0]
        keys_param = bindparam("keys", list(keys), type_=postgresql.ARRAY(column.type))
        return [column == any_(keys_param)]

    def read_versions(
        self,
        conn: Connection,
        spec: EntitySpec,
        keys: Sequence[EntityKey],
        at_least: Mapping[EntityKey, Version] | None,
    ) -> StoredVersions:
        """Return the versions of ``keys``: with ``at_least``, the row versions at least that
        new, staged by COPY (:func:`_newer_versions`); without, every one, by array."""
        if at_least is not None:
            rows, tombs = _newer_versions(conn, spec, keys, at_least)
        else:
            params = _keys_params(keys, len(spec.key_columns))
            rows = _fetch(conn, _versions_query(spec.table, spec.key_columns), params)
            tombs = _fetch(conn, _versions_query(spec.tombstone_table, spec.key_columns), params)
        if spec.composite:
            width = len(spec.key_columns)
            rows = [(row[:width], *row[width:]) for row in rows]
            tombs = [(tomb[:width], *tomb[width:]) for tomb in tombs]
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

    def upsert(
        self,
        conn: Connection,
        spec: EntitySpec,
        columns: tuple[str, ...],
        values: Sequence[tuple[Any, ...]],
        *,
        returning: bool,
    ) -> list[dict[str, Any]]:
        """Upsert through COPY from :data:`COPY_FROM_ROWS` rows on, else one VALUES statement."""
        if len(values) >= COPY_FROM_ROWS:
            return _copy_upsert(conn, spec, columns, values, returning)
        statement = self.row_upsert(spec, columns)
        return _execute_values(conn, statement, values, columns, returning=returning)

    def delete(self, conn: Connection, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        """Delete the rows and write the tombstones: through COPY from :data:`COPY_FROM_ROWS`
        deletes on."""
        if len(writes) >= COPY_FROM_ROWS:
            _copy_delete(conn, spec, writes)
        else:
            super().delete(conn, spec, writes)

    def delete_keys(
        self,
        conn: Connection,
        table: Table,
        key_columns: tuple[str, ...],
        keys: Sequence[EntityKey],
    ) -> None:
        """Delete the rows of ``keys``: one statement with an array (one per key column)."""
        params = _keys_params(keys, len(key_columns))
        _fetch(conn, _delete_query(table, key_columns), params, rows=False)

    def insert_many(
        self, conn: Connection, statement: Any, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Execute an INSERT for many rows as one VALUES statement (:func:`_execute_values`)."""
        columns = _values_template(statement, conn.dialect).columns
        _execute_values(conn, statement, [tuple(r[c] for c in columns) for r in rows], columns)

    def conflicts(self, exc: DBAPIError) -> bool:
        """Tell whether ``exc`` is a deadlock (40P01) or a lock wait timeout (55P03)."""
        return getattr(exc.orig, "pgcode", None) in ("40P01", "55P03")

    def refuses(self, exc: DBAPIError) -> bool:
        """Tell none: PostgreSQL's refusals are not operational errors (a missing table is a
        ProgrammingError)."""
        return False


@contextmanager
def raw_cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """Yield psycopg2's cursor of ``conn``'s connection, closed after; its errors are
    re-raised as SQLAlchemy's (naming ``sql``), so the callers' handling (refused row,
    retriable outage) is the same as for statements SQLAlchemy sends."""
    from psycopg2 import Error as PsycopgError

    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except PsycopgError as exc:
        raise DBAPIError.instance(sql, None, exc, PsycopgError) from exc
    finally:
        cursor.close()


def _keys_params(keys: Sequence[EntityKey], width: int) -> dict[str, list[Any]]:
    """Return the array parameters of ``keys``: ``keys``, or one array per part of a composite
    key (``keys_0``, ...; unnested side by side in the SQL)."""
    if width == 1:
        return {"keys": list(keys)}
    columns = list(zip(*keys, strict=True))
    return {f"keys_{i}": list(column) for i, column in enumerate(columns)}


def _fetch(
    conn: Connection, sql: str, params: Mapping[str, Any], *, rows: bool = True
) -> list[tuple[Any, ...]]:
    """Run a statement on the driver's cursor; return its rows (with ``rows``)."""
    with raw_cursor(conn, sql) as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if rows else []


def _copy_upsert(
    conn: Connection,
    spec: EntitySpec,
    columns: tuple[str, ...],
    values: Sequence[tuple[Any, ...]],
    returning: bool,
) -> list[dict[str, Any]]:
    """Upsert ``values`` through COPY into this session's staging table.

    The staging table is temporary (one per session, emptied at each commit) and has the
    entity table's columns without its constraints; the upsert from it carries the same
    version guard as the VALUES one.
    """
    create, copy, upsert, clear = _staging_sql(
        spec.table,
        spec.key_columns,
        spec.update_columns,
        columns,
        returning,
    )
    kinds = spec.column_kinds
    text = copy_text(values, [kinds.get(c) for c in columns])
    with raw_cursor(conn, upsert) as cursor:
        cursor.execute(create)
        cursor.copy_expert(copy, io.StringIO(text), size=len(text) + 1)
        cursor.execute(upsert)
        got = cursor.fetchall() if returning else []
        names = [d[0] for d in cursor.description] if returning else []
        cursor.execute(clear)
    return [dict(zip(names, row, strict=True)) for row in got]


def _newer_versions(
    conn: Connection,
    spec: EntitySpec,
    keys: Sequence[EntityKey],
    at_least: Mapping[EntityKey, Version],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Stage ``keys`` with their bounds by COPY, then read the versions at least as new.

    COPY, because psycopg2 turns a list parameter into an array literal element by element
    (measured: about 20 ms for 4,400 keys in four arrays, against 2 ms to stage them).
    """
    create, copy, query = _key_stage_sql(spec.table, spec.tombstone_table, spec.key_columns)
    key_kinds = [spec.column_kinds.get(c) for c in spec.key_columns]
    staged = (
        [(*k, *at_least[k]) for k in keys]  # type: ignore[misc]
        if spec.composite
        else [(k, *at_least[k]) for k in keys]
    )
    text = copy_text(
        staged, [*key_kinds, ColumnKind.INTEGER, ColumnKind.INTEGER, ColumnKind.INTEGER]
    )
    with raw_cursor(conn, query) as cursor:
        cursor.execute(create)
        cursor.copy_expert(copy, io.StringIO(text), size=len(text) + 1)
        cursor.execute(query)
        found = cursor.fetchall()
    rows = [found_row[1:] for found_row in found if not found_row[0]]
    tombs = [found_row[1:] for found_row in found if found_row[0]]
    return rows, tombs


def _execute_values(
    conn: Connection,
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
    rows it wrote.
    """
    from psycopg2.extras import Json, execute_values

    template, order, row, json_at = _values_template(statement, conn.dialect, returning)
    if order != columns:
        index = [columns.index(c) for c in order]
        values = [tuple(v[i] for i in index) for v in values]
    if json_at:  # psycopg2 adapts no dict, and a list as an array: say they are JSON
        values = [
            tuple(Json(x) if i in json_at and x is not None else x for i, x in enumerate(v))
            for v in values
        ]
    with raw_cursor(conn, template) as cursor:
        got = execute_values(
            cursor, template, values, template=row, page_size=max(1, len(values)), fetch=returning
        )
        if not returning:
            return []
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in got]


def _copy_delete(conn: Connection, spec: EntitySpec, writes: Sequence[Delete]) -> None:
    """Delete ``writes``' rows and write their tombstones through COPY."""
    create, copy, *statements = _delete_staging_sql(
        spec.table, spec.tombstone_table, spec.key_columns
    )
    now = int(time.time() * 1000)
    values = []
    composite = spec.composite
    for w in writes:
        assert w.version is not None  # resolve() gives every delete a version
        parts = w.key if composite else (w.key,)
        values.append((*parts, *w.version, now))  # type: ignore[misc]
    key_kinds = [spec.column_kinds.get(c) for c in spec.key_columns]
    text = copy_text(values, [*key_kinds, *[ColumnKind.INTEGER] * 4])
    with raw_cursor(conn, copy) as cursor:
        cursor.execute(create)
        cursor.copy_expert(copy, io.StringIO(text), size=len(text) + 1)
        for statement in statements:
            cursor.execute(statement)


@functools.lru_cache(maxsize=256)
def _staging_sql(
    table: Table,
    key_columns: tuple[str, ...],
    update_columns: tuple[str, ...],
    columns: tuple[str, ...],
    returning: bool,
) -> tuple[str, str, str, str]:
    """Return (once per table and columns) the SQL of a COPY upsert: create the staging
    table if missing, COPY into it, upsert from it with the version guard, empty it."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    stage = quote(f"mirror_stage_{table.name}"[:63])
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
        f"SELECT * FROM {quote(table.name)} WITH NO DATA"
    )
    names = ", ".join(quote(c) for c in columns)
    copy = f"COPY {stage} ({names}) FROM STDIN"
    staged = sa_table(f"mirror_stage_{table.name}"[:63], *(sa_column(c) for c in columns))
    stmt = postgresql.insert(table).from_select(list(columns), select(*staged.c))
    update = {c: stmt.excluded[c] for c in (*update_columns, *VERSION_COLUMNS) if c in columns}
    newer = tuple_(*(stmt.excluded[c] for c in VERSION_COLUMNS)) > tuple_(
        *(table.c[c] for c in VERSION_COLUMNS)
    )
    stmt = stmt.on_conflict_do_update(index_elements=list(key_columns), set_=update, where=newer)
    upsert = str(stmt.compile(dialect=dialect))
    if returning:
        upsert += " RETURNING " + ", ".join(quote(c) for c in public_columns(table))
    return create, copy, upsert, f"TRUNCATE {stage}"


@functools.lru_cache(maxsize=256)
def _delete_staging_sql(
    table: Table, tombstones: Table, key_columns: tuple[str, ...]
) -> tuple[str, ...]:
    """Return (once per table) the SQL of a COPY delete: create the staging table of deletes
    if missing, COPY into it, delete the staged keys' rows, write their tombstones (unless a
    newer one is there), empty it."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    name = f"mirror_deletes_{table.name}"[:63]
    stage = quote(name)
    columns = (*key_columns, *VERSION_COLUMNS, "deleted_at")
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
        f"SELECT * FROM {quote(tombstones.name)} WITH NO DATA"
    )
    copy = f"COPY {stage} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    match = " AND ".join(f"t.{quote(c)} = s.{quote(c)}" for c in key_columns)
    delete_rows = f"DELETE FROM {quote(table.name)} AS t USING {stage} AS s WHERE {match}"
    staged = sa_table(name, *(sa_column(c) for c in columns))
    stmt = postgresql.insert(tombstones).from_select(list(columns), select(*staged.c))
    newer = tuple_(*(stmt.excluded[c] for c in VERSION_COLUMNS)) > tuple_(
        *(tombstones.c[c] for c in VERSION_COLUMNS)
    )
    update = {c: stmt.excluded[c] for c in (*VERSION_COLUMNS, "deleted_at")}
    stmt = stmt.on_conflict_do_update(index_elements=list(key_columns), set_=update, where=newer)
    return create, copy, delete_rows, str(stmt.compile(dialect=dialect)), f"TRUNCATE {stage}"


@functools.lru_cache(maxsize=256)
def _key_stage_sql(
    table: Table, tombstones: Table, key_columns: tuple[str, ...]
) -> tuple[str, str, str]:
    """Return (once per table) the SQL staging a batch's keys with their oldest versions, and
    the query reading, against that stage, in one round trip: the row versions at least as
    new (``false`` first), and every tombstone of the staged keys (``true`` first), so that
    the writes know which keys have one to clear (few do) instead of probing for all."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    stage = quote(f"mirror_keys_{table.name}"[:63])
    # One staged column per key column: ``k`` (as ever), or ``k0``, ``k1``, ... (composite).
    staged = ["k"] if len(key_columns) == 1 else [f"k{i}" for i in range(len(key_columns))]
    types = [table.c[c].type.compile(dialect=dialect) for c in key_columns]
    declared = ", ".join(f"{s} {t}" for s, t in zip(staged, types, strict=True))
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} "
        f"({declared}, v bigint, p bigint, o bigint) ON COMMIT DELETE ROWS"
    )
    copy = f"COPY {stage} ({', '.join(staged)}, v, p, o) FROM STDIN"
    key = ", ".join(f"t.{quote(c)}" for c in key_columns)
    on = " AND ".join(f"t.{quote(c)} = b.{s}" for c, s in zip(key_columns, staged, strict=True))
    v, p, o = (quote(c) for c in VERSION_COLUMNS)

    query = (
        f"SELECT false, {key}, t.{v}, t.{p}, t.{o} FROM {stage} AS b "
        f"JOIN {quote(table.name)} AS t ON {on} "
        f"WHERE (t.{v}, t.{p}, t.{o}) >= (b.v, b.p, b.o) "
        f"UNION ALL SELECT true, {key}, t.{v}, t.{p}, t.{o} FROM {stage} AS b "
        f"JOIN {quote(tombstones.name)} AS t ON {on}"
    )
    return create, copy, query


@functools.lru_cache(maxsize=256)
def _versions_query(table: Table, key_columns: tuple[str, ...]) -> str:
    """Return (once per table) the driver SQL reading the versions of ``%(keys)s`` (a
    composite key's: of ``%(keys_0)s``, ... side by side, :func:`_keys_params`)."""
    keys = [table.c[c] for c in key_columns]
    query = select(*keys, *(table.c[c] for c in VERSION_COLUMNS)).where(_keys_match(keys))
    return str(query.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


def _keys_match(keys: list[Any]) -> Any:
    """Return the clause matching the keys of :func:`_keys_params`: ``k = ANY(%(keys)s)``, or
    ``(k0, k1) IN (SELECT * FROM unnest(%(keys_0)s, %(keys_1)s))``."""
    if len(keys) == 1:
        return keys[0] == any_(bindparam("keys", type_=postgresql.ARRAY(keys[0].type)))
    arrays = [bindparam(f"keys_{i}", type_=postgresql.ARRAY(k.type)) for i, k in enumerate(keys)]
    unnested = func.unnest(*arrays).table_valued(*(f"k{i}" for i in range(len(keys))))
    pairs = select(unnested.render_derived())
    return tuple_(*keys).in_(pairs)


@functools.lru_cache(maxsize=256)
def _delete_query(table: Table, key_columns: tuple[str, ...]) -> str:
    """Return (once per table) the driver SQL deleting the rows of ``%(keys)s`` (see
    :func:`_versions_query`)."""
    query = delete(table).where(_keys_match([table.c[c] for c in key_columns]))
    return str(query.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


class ValuesTemplate(NamedTuple):
    """An INSERT made ready for psycopg2's ``execute_values``."""

    sql: str
    """The statement with ``VALUES %s``."""
    columns: tuple[str, ...]
    """The order of each row's values."""
    row: str
    """Each row's template, with the casts SQLAlchemy compiled in (``(%s, %s::JSON)``)."""
    json_at: tuple[int, ...]
    """The places of JSON columns, whose values psycopg2 must be told are JSON."""


@functools.lru_cache(maxsize=256)
def _values_template(statement: Any, dialect: Any, returning: bool = False) -> ValuesTemplate:
    """Compile an INSERT to ``INSERT ... VALUES %s ...``, its column order and row template,
    once."""
    sql = str(statement.compile(dialect=dialect))
    if returning:
        quote = dialect.identifier_preparer.quote
        sql += " RETURNING " + ", ".join(quote(c) for c in public_columns(statement.table))
    match = _VALUES_CLAUSE.search(sql)
    if match is None or "%(" in sql[match.end() :]:
        raise StoreError(f"cannot turn {sql[:80]!r}... into a VALUES %s template")
    head, tail = sql[: match.start()], sql[match.end() :]
    columns = tuple(re.findall(r"%\((\w+)\)s", match.group(1)))
    row = "(" + re.sub(r"%\(\w+\)s", "%s", match.group(1)) + ")"
    table_columns = statement.table.c
    json_at = tuple(
        i
        for i, name in enumerate(columns)
        if name in table_columns and isinstance(table_columns[name].type, JSON)
    )
    return ValuesTemplate(f"{head} VALUES %s{tail}", columns, row, json_at)


def _entity_lock_id(table_name: str) -> int:
    """Return a stable 32-bit lock id for an entity table (the same in every process)."""
    return zlib.crc32(table_name.encode()) - 2**31
