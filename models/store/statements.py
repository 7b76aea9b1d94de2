"""The SQL of a batch, built once per table and column set (cached), for both dialects."""

from __future__ import annotations

import functools
import re
import zlib
from typing import Any

from sqlalchemy import (
    Table,
    any_,
    bindparam,
    delete,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import column as sa_column
from sqlalchemy.sql import table as sa_table

from models.registry import VERSION_COLUMNS
from models.store.schema import (
    changelogs_table,
    logs_table,
    offsets_table,
    outcomes_table,
    public_columns,
)
from streams.core.errors import StoreError
from streams.core.routing import Version

_CHUNK = 500
#: First key of the advisory locks serialising an entity's writes (StoreTransaction.serialize).
ENTITY_LOCK_SPACE = 0x6D697272  # "mirr"
#: Upserts of at least this many rows go through COPY (see models/store/postgres_copy.py).
COPY_FROM_ROWS = 50


@functools.lru_cache(maxsize=256)
def _upsert_statement(
    table: Table,
    key_column: str,
    update_columns: tuple[str, ...],
    columns: tuple[str, ...],
    dialect: str,
) -> Any:
    """Build (once per table and column set) the version-guarded upsert.

    It names only ``columns``: the others keep their default on create and their value on
    update (a model may have columns its events never set).
    """
    stmt = _insert_for(dialect, table).values({c: bindparam(c) for c in columns})
    update = {c: stmt.excluded[c] for c in (*update_columns, *VERSION_COLUMNS) if c in columns}
    newer = tuple_(*(stmt.excluded[c] for c in VERSION_COLUMNS)) > tuple_(
        *(table.c[c] for c in VERSION_COLUMNS)
    )
    # The guard is also checked here: the row may have been inserted after our read.
    return stmt.on_conflict_do_update(index_elements=[key_column], set_=update, where=newer)


def _insert_for(dialect: str, table: Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@functools.lru_cache(maxsize=256)
def _tombstone_upsert(tomb: Table, key_column: str, dialect: str) -> Any:
    """Write a tombstone unless a newer one is there."""
    stmt = _insert_for(dialect, tomb)
    newer = tuple_(*(stmt.excluded[c] for c in VERSION_COLUMNS)) > tuple_(
        *(tomb.c[c] for c in VERSION_COLUMNS)
    )
    update = {c: stmt.excluded[c] for c in (*VERSION_COLUMNS, "deleted_at")}
    return stmt.on_conflict_do_update(index_elements=[key_column], set_=update, where=newer)


def _guarded_update(table: Table, key_column: str, *, same_version: bool = False) -> Any:
    """Return an UPDATE of the row ``mirror_key`` setting the version ``mirror_new_*``, only
    where the row's version is older (the guard is checked again in the database), or as old
    with ``same_version`` (a Kafka tombstone without a version deletes at the row's own)."""
    new: tuple[Any, ...] = tuple(bindparam(f"mirror_new_{c}") for c in VERSION_COLUMNS)
    stored = tuple_(*(table.c[c] for c in VERSION_COLUMNS))
    older = stored <= tuple_(*new) if same_version else stored < tuple_(*new)
    return (
        update(table)
        .where(table.c[key_column] == bindparam("mirror_key"), older)
        .values(dict(zip(VERSION_COLUMNS, new, strict=True)))
    )


def _new_version_params(version: Version) -> dict[str, int]:
    """Return the parameters of :func:`_guarded_update`'s new version."""
    return {f"mirror_new_{c}": v for c, v in zip(VERSION_COLUMNS, version, strict=True)}


@functools.lru_cache(maxsize=256)
def _patch_statement(table: Table, key_column: str, columns: tuple[str, ...]) -> Any:
    """Build (once per table and column set) the version-guarded UPDATE of a partial update."""
    stmt = _guarded_update(table, key_column)
    return stmt.values({c: bindparam(f"mirror_set_{c}") for c in columns if c != key_column})


@functools.lru_cache(maxsize=64)
def _soft_delete_statement(table: Table, key_column: str, column: str) -> Any:
    """Build (once per table) the version-guarded UPDATE marking a row deleted."""
    stmt = _guarded_update(table, key_column, same_version=True)
    return stmt.values({column: bindparam("mirror_deleted_at")})


@functools.lru_cache(maxsize=4)
def _offsets_upsert(dialect: str) -> Any:
    """Store a partition's next offset, never moving it backwards."""
    stmt = _insert_for(dialect, offsets_table)
    return stmt.on_conflict_do_update(
        index_elements=["consumer_group", "topic", "partition"],
        set_={"next_offset": stmt.excluded.next_offset},
        where=offsets_table.c.next_offset < stmt.excluded.next_offset,
    )


@functools.lru_cache(maxsize=4)
def _log_upsert(dialect: str) -> Any:
    """Note a topic's id: a new row, or the id of a row that had none (never another id:
    that is a recreated topic, :meth:`models.store.SqlStore.restart_log`)."""
    stmt = _insert_for(dialect, logs_table)
    return stmt.on_conflict_do_update(
        index_elements=["topic"],
        set_={"topic_id": stmt.excluded.topic_id},
        where=logs_table.c.topic_id.is_(None),
    )


@functools.lru_cache(maxsize=4)
def _changelog_upsert(dialect: str) -> Any:
    """Record which changelog topic (by id) a table's rows were written to."""
    stmt = _insert_for(dialect, changelogs_table)
    return stmt.on_conflict_do_update(
        index_elements=["consumer_group", "topic"], set_={"topic_id": stmt.excluded.topic_id}
    )


@functools.lru_cache(maxsize=4)
def _counts_upsert(dialect: str) -> Any:
    """Add to an outcome count."""
    stmt = _insert_for(dialect, outcomes_table)
    return stmt.on_conflict_do_update(
        index_elements=["consumer_group", "topic", "outcome"],
        set_={"count": outcomes_table.c.count + stmt.excluded["count"]},
    )


#: Set first in each batch's transaction (PostgreSQL): its joins look staged keys up by
#: primary key (see ``StoreTransaction.serialize``).
KEY_LOOKUP_JOINS = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"

_VALUES_CLAUSE = re.compile(r" VALUES \((%\(\w+\)s(?:, %\(\w+\)s)*)\)")


@functools.lru_cache(maxsize=256)
def _staging_sql(
    table: Table,
    key_column: str,
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
    stmt = stmt.on_conflict_do_update(index_elements=[key_column], set_=update, where=newer)
    upsert = str(stmt.compile(dialect=dialect))
    if returning:
        upsert += " RETURNING " + ", ".join(quote(c) for c in public_columns(table))
    return create, copy, upsert, f"TRUNCATE {stage}"


@functools.lru_cache(maxsize=256)
def _delete_staging_sql(table: Table, tombstones: Table, key_column: str) -> tuple[str, ...]:
    """Return (once per table) the SQL of a COPY delete: create the staging table of deletes
    if missing, COPY into it, delete the staged keys' rows, write their tombstones (unless a
    newer one is there), empty it."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    name = f"mirror_deletes_{table.name}"[:63]
    stage = quote(name)
    columns = (key_column, *VERSION_COLUMNS, "deleted_at")
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
        f"SELECT * FROM {quote(tombstones.name)} WITH NO DATA"
    )
    copy = f"COPY {stage} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    key = quote(key_column)
    delete_rows = f"DELETE FROM {quote(table.name)} AS t USING {stage} AS s WHERE t.{key} = s.{key}"
    staged = sa_table(name, *(sa_column(c) for c in columns))
    stmt = postgresql.insert(tombstones).from_select(list(columns), select(*staged.c))
    newer = tuple_(*(stmt.excluded[c] for c in VERSION_COLUMNS)) > tuple_(
        *(tombstones.c[c] for c in VERSION_COLUMNS)
    )
    update = {c: stmt.excluded[c] for c in (*VERSION_COLUMNS, "deleted_at")}
    stmt = stmt.on_conflict_do_update(index_elements=[key_column], set_=update, where=newer)
    return create, copy, delete_rows, str(stmt.compile(dialect=dialect)), f"TRUNCATE {stage}"


@functools.lru_cache(maxsize=256)
def _key_stage_sql(table: Table, tombstones: Table, key_column: str) -> tuple[str, str, str]:
    """Return (once per table) the SQL staging a batch's keys with their oldest versions, and
    the query reading, against that stage, in one round trip: the row versions at least as
    new (``false`` first), and every tombstone of the staged keys (``true`` first), so that
    the writes know which keys have one to clear (few do) instead of probing for all."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    stage = quote(f"mirror_keys_{table.name}"[:63])
    key_type = table.c[key_column].type.compile(dialect=dialect)
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} "
        f"(k {key_type}, v bigint, p bigint, o bigint) ON COMMIT DELETE ROWS"
    )
    copy = f"COPY {stage} (k, v, p, o) FROM STDIN"
    key = quote(key_column)
    v, p, o = (quote(c) for c in VERSION_COLUMNS)

    query = (
        f"SELECT false, t.{key}, t.{v}, t.{p}, t.{o} FROM {stage} AS b "
        f"JOIN {quote(table.name)} AS t ON t.{key} = b.k "
        f"WHERE (t.{v}, t.{p}, t.{o}) >= (b.v, b.p, b.o) "
        f"UNION ALL SELECT true, t.{key}, t.{v}, t.{p}, t.{o} FROM {stage} AS b "
        f"JOIN {quote(tombstones.name)} AS t ON t.{key} = b.k"
    )
    return create, copy, query


@functools.lru_cache(maxsize=256)
def _versions_query(table: Table, key_column: str) -> str:
    """Return (once per table) the driver SQL reading the versions of ``%(keys)s``."""
    key = table.c[key_column]
    query = select(key, *(table.c[c] for c in VERSION_COLUMNS)).where(
        key == any_(bindparam("keys", type_=postgresql.ARRAY(key.type)))
    )
    return str(query.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=256)
def _delete_query(table: Table, key_column: str) -> str:
    """Return (once per table) the driver SQL deleting the rows of ``%(keys)s``."""
    key = table.c[key_column]
    query = delete(table).where(key == any_(bindparam("keys", type_=postgresql.ARRAY(key.type))))
    return str(query.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=256)
def _values_template(
    statement: Any, dialect: Any, returning: bool = False
) -> tuple[str, tuple[str, ...]]:
    """Compile an INSERT to ``INSERT ... VALUES %s ...`` and its column order, once."""
    sql = str(statement.compile(dialect=dialect))
    if returning:
        quote = dialect.identifier_preparer.quote
        sql += " RETURNING " + ", ".join(quote(c) for c in public_columns(statement.table))
    match = _VALUES_CLAUSE.search(sql)
    if match is None or "%(" in sql[match.end() :]:
        raise StoreError(f"cannot turn {sql[:80]!r}... into a VALUES %s template")
    head, tail = sql[: match.start()], sql[match.end() :]
    columns = tuple(re.findall(r"%\((\w+)\)s", match.group(1)))
    return f"{head} VALUES %s{tail}", columns


def _entity_lock_id(table_name: str) -> int:
    """Return a stable 32-bit lock id for an entity table (the same in every process)."""
    return zlib.crc32(table_name.encode()) - 2**31


def _version(row: Any) -> Version:
    return (int(row.mirror_version), int(row.mirror_partition), int(row.mirror_offset))


def _version_values(version: Version) -> dict[str, int]:
    return dict(zip(VERSION_COLUMNS, version, strict=True))
