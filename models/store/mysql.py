"""The store on MySQL and MariaDB (PyMySQL): a batch's rows written by one guarded multi-row
``INSERT ... ON DUPLICATE KEY UPDATE``, keys looked up by ``IN`` lists, a row lock per entity;
and the traps of this database, each handled here:

- **Keys compare byte for byte.** Default collations are case-, accent- and (``PAD SPACE``)
  trailing-space-insensitive, so ``ABC``, ``abc`` and ``abc `` would be one row. Tables are
  created ``utf8mb4`` with a binary ``NO PAD`` collation (:func:`table_collation`), and an
  existing table whose key column would merge keys is refused at start (:meth:`prepare`).
- **Strict SQL mode** on every connection (:data:`SQL_MODE`): a too-long string or an
  out-of-range number is refused, never stored truncated.
- **``ON DUPLICATE KEY UPDATE`` assigns left to right**: the version guard reads the version
  columns, so the data columns are assigned first and the version columns last, least
  significant first (:func:`_guarded_assignments` says why that is exact). ``VALUES()`` or
  MySQL 8's row alias is SQLAlchemy's choice by server.
- **DDL commits implicitly**: tables are created only by :meth:`SqlStore.create_tables`,
  never inside a batch; nothing here creates a table.
- **Only InnoDB is transactional**: a table of another engine is refused at start.
- **Deadlocks** (InnoDB's gap locks between workers) fail the batch as a passing failure: it
  is retried and counted like any other (``mirror_batch_retries``); rows are written in key
  order, which makes them rarer.
- **Types that would store a value altered**: ``DateTime`` is created ``DATETIME(6)`` (not
  whole seconds) and ``Float`` ``DOUBLE`` (not single precision).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pymysql.converters import conversions, escape_datetime
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL
from sqlalchemy.engine import Dialect as SqlDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable
from sqlalchemy.types import DateTime, Float

from models.columns import ColumnKind
from models.registry import VERSION_COLUMNS, EntitySpec, column_rule
from models.store.dialect import IN_BATCH, BookkeepingUpserts
from models.store.mysql_text import literals, naive_utc, values_text
from models.store.schema import (
    changelogs_table,
    logs_table,
    offsets_table,
    outcomes_table,
)
from models.store.statements import tombstone_rows
from streams.core.decisions import Delete
from streams.core.errors import StoreError, UnfitTable
from streams.core.guard import StoredVersions
from streams.core.records import EntityKey, Version

#: The SQL mode of every connection: strict (a value that does not fit is refused, not
#: altered), no zero dates, no silent change of engine; backslash escapes on (the literals of
#: ``mysql_text`` use them), and no ``ANSI_QUOTES`` (SQLAlchemy quotes with backticks).
SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
#: The most keys in one ``IN`` list.
_CHUNK = 1000

#: Errors that are the database refusing a statement for its table or values, not failing:
#: a retry changes nothing (other operational errors, a lost connection, a deadlock, a lock
#: wait timeout, a full disk, are passing). PyMySQL raises OperationalError for these codes.
REFUSAL_CODES = frozenset(
    {
        1054,  # unknown column
        1142,  # command denied on table
        1143,  # command denied on column
        1267,  # illegal mix of collations
        1292,  # incorrect (date, time, double) value
        1300,  # invalid character string for the charset
        1366,  # incorrect value for a column
        1367,  # illegal value
        1411,  # incorrect value for a function
        1690,  # value out of range (BIGINT arithmetic)
        3140,  # invalid JSON text (MySQL)
        3819,  # check constraint violated (MySQL)
        4025,  # check constraint violated (MariaDB, also JSON_VALID)
        4078,  # illegal parameter types for an operation (MariaDB)
    }
)

#: Locks: one row per entity (and per named lock) in this table, taken shared or exclusive
#: by ``SELECT ... LOCK IN SHARE MODE`` / ``FOR UPDATE`` until the transaction ends, as
#: PostgreSQL's advisory transaction locks are. MySQL's GET_LOCK is exclusive only, and held
#: by the session rather than the transaction.
_locks = MetaData()
locks_table = Table(
    "mirror_locks",
    _locks,
    Column("name", String(191), primary_key=True),
)


def _utc_datetime(value: datetime, mapping: Any = None) -> str:
    """PyMySQL's datetime literal, in UTC and without an offset, which MariaDB's DATETIME
    refuses (PyMySQL writes an aware datetime with its offset)."""
    return str(escape_datetime(naive_utc(value), mapping))


#: PyMySQL's conversions, with aware datetimes sent as UTC (:func:`_utc_datetime`).
_CONVERSIONS = {**conversions, datetime: _utc_datetime}

#: Statements that commit the transaction they are in (temporary tables do not).
_IMPLICIT_COMMIT = re.compile(
    r"\s*(?:CREATE|ALTER|DROP|RENAME|TRUNCATE)\s+(?!TEMPORARY\b)", re.IGNORECASE
)
_VALUES_CLAUSE = re.compile(r" VALUES \((%\(\w+\)s(?:, %\(\w+\)s)*)\)")


class MysqlDialect:
    """MySQL or MariaDB (PyMySQL), as :class:`~models.store.dialect.Dialect` describes."""

    upsert_returns_rows = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.bookkeeping = bookkeeping_upserts()

    def create_engine(self, url: URL) -> Engine:
        """Create the engine for ``url``: utf8mb4, strict SQL mode, UTC, READ COMMITTED.

        READ COMMITTED: each statement reads the latest committed rows (as on PostgreSQL),
        and InnoDB takes no gap locks for reads, the main cause of deadlocks between
        workers upserting one table.
        """
        engine = create_engine(
            url,
            pool_size=5,
            max_overflow=5,
            isolation_level="READ COMMITTED",
            connect_args={
                "charset": "utf8mb4",
                "sql_mode": SQL_MODE,
                "init_command": "SET time_zone = '+00:00'",
                "conv": _CONVERSIONS,
            },
        )
        event.listen(engine, "checkin", _release_named_locks)
        event.listen(engine, "before_cursor_execute", _refuse_ddl_in_a_batch)
        return engine

    def prepare(
        self, conn: Connection, specs: Sequence[EntitySpec], tables: Sequence[Table]
    ) -> None:
        """Create the lock rows of ``specs``, and refuse ``tables`` that would break a
        guarantee: not InnoDB, a text column not utf8mb4, a key column that merges keys."""
        _locks.create_all(conn, checkfirst=True)
        names = [_entity_lock(spec) for spec in specs]
        conn.execute(mysql.insert(locks_table).prefix_with("IGNORE"), [{"name": n} for n in names])
        problem = table_problem(conn, tables)
        if problem is not None:
            raise UnfitTable(problem)

    def lock(self, conn: Connection, name: str) -> None:
        """Take the lock named ``name`` (GET_LOCK, held until the connection goes back to the
        pool, right after its transaction: it outlives the implicit commits of DDL)."""
        got = conn.execute(text("SELECT GET_LOCK(:name, 600)"), {"name": name}).scalar()
        if got != 1:
            raise StoreError(f"could not take the lock {name!r} within 600 s")
        conn.connection.info["mirror_named_locks"] = True

    def lock_entity(self, conn: Connection, spec: EntitySpec, *, exclusive: bool) -> None:
        """Lock the entity's row of ``mirror_locks``, shared or exclusive (see
        ``StoreTransaction.serialize``)."""
        query = select(locks_table.c.name).where(locks_table.c.name == _entity_lock(spec))
        query = query.with_for_update(read=not exclusive)
        if conn.execute(query).first() is None:
            raise StoreError(f"no lock row for {spec.kind}: the tables were not prepared")

    def key_filters(self, columns: Sequence[Any], keys: Sequence[EntityKey]) -> list[Any]:
        """Return one ``IN`` clause per :data:`_CHUNK` keys (row values for a composite key)."""
        column = columns[0] if len(columns) == 1 else tuple_(*columns)
        return [column.in_(list(keys[i : i + _CHUNK])) for i in range(0, len(keys), _CHUNK)]

    def read_versions(
        self,
        conn: Connection,
        spec: EntitySpec,
        keys: Sequence[EntityKey],
        at_least: Mapping[EntityKey, Version] | None,
    ) -> StoredVersions:
        """Return the row and tombstone versions of ``keys``, one round trip per
        :data:`_CHUNK` keys: with ``at_least``, only the row versions at least as new as the
        oldest of it (a bound for every key: PyMySQL parses each row returned in Python, and
        in a stream in order most stored rows are older than the whole batch); every
        tombstone of the keys is read still (see ``StoreTransaction.current``)."""
        head = _versions_sql(spec.table, spec.tombstone_table, spec.key_columns, conn.dialect)
        bound = ""
        if at_least:
            v, p, o = _quoted_versions(conn.dialect)
            least_v, least_p, least_o = (int(n) for n in min(at_least.values()))
            bound = f"AND ({v}, {p}, {o}) >= ({least_v}, {least_p}, {least_o})"
        head = head.replace("{bound}", bound)
        kinds = [spec.column_kinds.get(c) for c in spec.key_columns]
        width = len(kinds)
        newest: dict[EntityKey, Version] = {}
        present: set[EntityKey] = set()
        tombstoned: set[EntityKey] = set()
        for start in range(0, len(keys), _CHUNK):
            sql = head.replace("{keys}", _key_literals(kinds, keys[start : start + _CHUNK]))
            for is_tomb, *found_row in _run(conn, sql):
                key = found_row[0] if width == 1 else tuple(found_row[:width])
                version = found_row[width:]
                found: Version = (int(version[0]), int(version[1]), int(version[2]))
                if is_tomb:
                    tombstoned.add(key)
                else:
                    present.add(key)
                known = newest.get(key)
                if known is None or found > known:
                    newest[key] = found
        # Which keys have a row is known only when every row was read.
        return StoredVersions(newest, tombstoned, set() if at_least else present)

    def upsert(
        self,
        conn: Connection,
        spec: EntitySpec,
        columns: tuple[str, ...],
        values: Sequence[tuple[Any, ...]],
        *,
        returning: bool,
    ) -> list[dict[str, Any]]:
        """Upsert ``values`` in key order by one multi-row statement; return nothing (the rows
        are read back)."""
        statement = row_upsert(spec.table, spec.key_columns, spec.update_columns, columns)
        if spec.composite:
            at = [columns.index(c) for c in spec.key_columns]
            ordered = sorted(values, key=lambda v: tuple(v[i] for i in at))
        else:
            key_at = columns.index(spec.key_column)
            ordered = sorted(values, key=lambda v: v[key_at])
        _insert_values(conn, statement, columns, ordered, spec.column_kinds)
        return []

    def delete(self, conn: Connection, spec: EntitySpec, writes: Sequence[Delete]) -> None:
        """Delete the rows of ``writes`` and write their tombstones."""
        self.delete_keys(conn, spec.table, spec.key_columns, [w.key for w in writes])
        self.write_tombstones(conn, spec, writes)

    def write_tombstones(
        self, conn: Connection, spec: EntitySpec, writes: Sequence[Delete]
    ) -> None:
        """Write the tombstones of ``writes`` (unless a newer one is there), in key order."""
        statement = tombstone_upsert(spec.tombstone_table, spec.key_columns)
        key_columns = spec.key_columns
        rows = sorted(tombstone_rows(spec, writes), key=lambda r: [r[c] for c in key_columns])
        columns = (*key_columns, *VERSION_COLUMNS, "deleted_at")
        values = [tuple(r[c] for c in columns) for r in rows]
        kinds = {c: ColumnKind.INTEGER for c in columns[len(key_columns) :]}
        for c in key_columns:
            key_kind = spec.column_kinds.get(c)
            if key_kind is not None:
                kinds[c] = key_kind
        _insert_values(conn, statement, columns, values, kinds)

    def delete_keys(
        self,
        conn: Connection,
        table: Table,
        key_columns: tuple[str, ...],
        keys: Sequence[EntityKey],
    ) -> None:
        """Delete the rows of ``keys``, :data:`_CHUNK` at a time, in key order (their literals
        written as the upserts' are: SQLAlchemy would compile an ``IN`` of a thousand
        parameters each time, and PyMySQL escape each in Python)."""
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in key_columns)
        head = f"DELETE FROM {quote(table.name)} WHERE ({names}) IN "
        kinds = [column_rule(table.c[c]).kind for c in key_columns]
        ordered = sorted(keys)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            _run(conn, head + "(" + _key_literals(kinds, chunk) + ")", rows=False)

    def insert_many(
        self, conn: Connection, statement: Any, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Execute an INSERT for many rows (PyMySQL makes one multi-row statement of it)."""
        conn.execute(statement, list(rows))

    def conflicts(self, exc: DBAPIError) -> bool:
        """Tell whether ``exc`` is a deadlock (1213) or a lock wait timeout (1205)."""
        return _error_code(exc) in (1205, 1213)

    def refuses(self, exc: DBAPIError) -> bool:
        """Tell whether ``exc`` is one of the :data:`REFUSAL_CODES`."""
        return _error_code(exc) in REFUSAL_CODES


def _key_literals(kinds: Sequence[ColumnKind | None], keys: Sequence[EntityKey]) -> str:
    """Return ``keys`` as the SQL literals of an ``IN`` list: ``a,b,...``, or for a composite
    key the row values ``(a,1),(b,2),...``."""
    if len(kinds) == 1:
        return literals(kinds[0], keys)
    return values_text(keys, kinds)  # type: ignore[arg-type]


def _error_code(exc: DBAPIError) -> int | None:
    """Return the server's error code of ``exc`` (PyMySQL's first argument), or None."""
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def bookkeeping_upserts() -> BookkeepingUpserts:
    """Build the upserts of the bookkeeping tables (see :class:`BookkeepingUpserts`)."""
    offsets = mysql.insert(offsets_table)
    counts = mysql.insert(outcomes_table)
    changelog = mysql.insert(changelogs_table)
    log = mysql.insert(logs_table)
    return BookkeepingUpserts(
        offsets=offsets.on_duplicate_key_update(
            next_offset=func.greatest(offsets_table.c.next_offset, offsets.inserted.next_offset)
        ),
        counts=counts.on_duplicate_key_update(
            count=outcomes_table.c.count + counts.inserted["count"]
        ),
        changelog=changelog.on_duplicate_key_update(topic_id=changelog.inserted.topic_id),
        log=log.on_duplicate_key_update(
            topic_id=func.coalesce(logs_table.c.topic_id, log.inserted.topic_id)
        ),
    )


def _guarded_assignments(stmt: Any, table: Table, columns: Sequence[str]) -> list[Any]:
    """Return the ``ON DUPLICATE KEY UPDATE`` assignments of ``columns`` with the version
    guard, in an order that keeps it exact although MySQL assigns left to right.

    The guard is ``new version > stored version``, with versions compared as (version,
    partition, offset). The data columns come first and read the stored version untouched.
    Then the version columns, least significant first, each with the guard read again: if
    the row is newer, each assignment makes its column equal to the new one, so each next
    guard compares only the columns not yet assigned, and where those are equal the column
    was equal already; if it is not newer, nothing was assigned and each guard is false again.
    """
    new = tuple_(*(stmt.inserted[c] for c in VERSION_COLUMNS))
    stored = tuple_(*(table.c[c] for c in VERSION_COLUMNS))
    guard = new > stored
    data = [c for c in columns if c not in VERSION_COLUMNS]
    order = [*data, *reversed(VERSION_COLUMNS)]
    return [(c, func.if_(guard, stmt.inserted[c], table.c[c])) for c in order]


@functools.lru_cache(maxsize=256)
def row_upsert(
    table: Table,
    key_columns: tuple[str, ...],
    update_columns: tuple[str, ...],
    columns: tuple[str, ...],
) -> Any:
    """Build (once per table and column set) the version-guarded upsert naming ``columns``."""
    stmt = mysql.insert(table).values({c: None for c in columns})
    assigned = [c for c in (*update_columns, *VERSION_COLUMNS) if c in columns]
    return stmt.on_duplicate_key_update(_guarded_assignments(stmt, table, assigned))


@functools.lru_cache(maxsize=256)
def tombstone_upsert(tomb: Table, key_columns: tuple[str, ...]) -> Any:
    """Write a tombstone unless a newer one is there."""
    columns = (*key_columns, *VERSION_COLUMNS, "deleted_at")
    stmt = mysql.insert(tomb).values({c: None for c in columns})
    return stmt.on_duplicate_key_update(
        _guarded_assignments(stmt, tomb, ("deleted_at", *VERSION_COLUMNS))
    )


def _insert_values(
    conn: Connection,
    statement: Any,
    columns: tuple[str, ...],
    values: Sequence[tuple[Any, ...]],
    kinds: Mapping[str, ColumnKind],
) -> None:
    """Send ``values`` (in ``columns`` order) of an INSERT as one multi-row statement whose
    literals ``mysql_text`` writes (measured: PyMySQL's executemany formats each value
    through a Python call of its own)."""
    head, order, tail = _values_template(statement, conn.dialect)
    if order != columns:
        index = [columns.index(c) for c in order]
        values = [tuple(v[i] for i in index) for v in values]
    rows = values_text(values, [kinds.get(c) for c in order])
    _run(conn, f"{head} VALUES {rows}{tail}", rows=False)


def _run(conn: Connection, sql: str, *, rows: bool = True) -> list[Any]:
    """Execute SQL text whose values are literals already (no parameters: a ``%`` in a value
    is not a placeholder)."""
    result = conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
    return list(result) if rows else []


@functools.lru_cache(maxsize=256)
def _values_template(statement: Any, dialect: SqlDialect) -> tuple[str, tuple[str, ...], str]:
    """Split a compiled one-row INSERT into the text before its VALUES, its column order, and
    the text after (``AS new ON DUPLICATE KEY UPDATE ...``), once per statement and server."""
    sql = str(statement.compile(dialect=dialect))
    match = _VALUES_CLAUSE.search(sql)
    if match is None or "%" in sql[match.end() :]:
        raise StoreError(f"cannot turn {sql[:80]!r}... into a multi-row VALUES statement")
    columns = tuple(re.findall(r"%\((\w+)\)s", match.group(1)))
    return sql[: match.start()], columns, sql[match.end() :]


@functools.lru_cache(maxsize=256)
def _versions_sql(
    table: Table, tombstones: Table, key_columns: tuple[str, ...], dialect: SqlDialect
) -> str:
    """Return (once per table) the SQL reading the row versions (``0`` first) and the
    tombstone versions (``1`` first) of the keys put in place of ``{keys}``, the rows' at
    least as new as ``{bound}`` says."""
    quote = dialect.identifier_preparer.quote
    key = ", ".join(quote(c) for c in key_columns)
    match = key if len(key_columns) == 1 else f"({key})"
    names = ", ".join(quote(c) for c in VERSION_COLUMNS)
    return (
        f"SELECT 0, {key}, {names} FROM {quote(table.name)} WHERE {match} IN ({{keys}}) {{bound}} "
        f"UNION ALL SELECT 1, {key}, {names} FROM {quote(tombstones.name)} "
        f"WHERE {match} IN ({{keys}})"
    )


def _quoted_versions(dialect: SqlDialect) -> list[str]:
    """Return the version columns' names, quoted."""
    return [dialect.identifier_preparer.quote(c) for c in VERSION_COLUMNS]


def _refuse_ddl_in_a_batch(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    """Refuse DDL in a batch's transaction (a batch hook's, say): MySQL would commit the
    batch's writes so far at once, without its stored offsets, and a crash then would apply
    them again. Temporary tables commit nothing."""
    in_batch = context is not None and context.execution_options.get(IN_BATCH)
    if in_batch and _IMPLICIT_COMMIT.match(statement):
        raise StoreError(
            f"{' '.join(statement.split(None, 2)[:2])} inside a batch's transaction: MySQL would "
            "commit the batch halfway; create tables before the worker starts"
        )


def _entity_lock(spec: EntitySpec) -> str:
    return f"entity:{spec.table.name}"


def _release_named_locks(dbapi_connection: Any, record: Any) -> None:
    """Release the GET_LOCK locks of a connection going back to the pool (see ``lock``)."""
    held = record is not None and record.info.pop("mirror_named_locks", False)
    if held and dbapi_connection is not None:  # None: the connection was lost, locks with it
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT RELEASE_ALL_LOCKS()")
        finally:
            cursor.close()


# --- the tables this database keeps the guarantees on ---------------------------------------


def table_collation(dialect: SqlDialect) -> str:
    """Return the binary ``NO PAD`` utf8mb4 collation of the server (keys compare byte for
    byte, trailing spaces included)."""
    if getattr(dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"
    version = getattr(dialect, "server_version_info", None) or (0,)
    if tuple(version) < (8, 0, 17):
        raise StoreError(
            "MySQL before 8.0.17 has no binary NO PAD collation for utf8mb4 keys; "
            "use MySQL 8.0.17 or later, or MariaDB"
        )
    return "utf8mb4_0900_bin"


def byte_exact(collation: str | None) -> bool:
    """Tell whether a column of ``collation`` compares byte for byte (None: not text)."""
    if collation is None:
        return True
    return collation == "binary" or collation.endswith("0900_bin") or "_nopad_bin" in collation


def table_problem(conn: Connection, tables: Sequence[Table]) -> str | None:
    """Return why one of ``tables`` cannot keep the mirror's guarantees (one line), or None."""
    names = sorted({t.name for t in tables})
    keys = {(t.name, c.name) for t in tables for c in t.primary_key.columns}
    found = conn.execute(
        text(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names"
        ).bindparams(names=names),
    )
    for name, engine in found:
        if (engine or "").lower() != "innodb":
            return (
                f"table {name} uses the {engine} engine, which has no transactions: the mirror "
                f"keeps its guarantees on InnoDB only (ALTER TABLE {name} ENGINE=InnoDB)"
            )
    columns = conn.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME "
            "FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names"
        ).bindparams(names=names),
    )
    for name, column, charset, collation in columns:
        if charset is not None and charset not in ("utf8mb4", "binary"):
            return (
                f"column {name}.{column} is {charset}, which cannot hold every character: "
                f"make it utf8mb4 (ALTER TABLE {name} CONVERT TO CHARACTER SET utf8mb4)"
            )
        if (name, column) in keys and not byte_exact(collation):
            return (
                f"key column {name}.{column} has collation {collation}, under which keys that "
                "differ in case, accent or trailing spaces are one row; give it a binary "
                f"NO PAD collation ({table_collation(conn.dialect)})"
            )
    return None


@compiles(CreateTable, "mysql")
@compiles(CreateTable, "mariadb")
def _create_table(element: CreateTable, compiler: Any, **kw: Any) -> str:
    """Create tables InnoDB, utf8mb4, with a byte-exact collation, unless the table says
    otherwise (then :func:`table_problem` judges it)."""
    sql: str = compiler.visit_create_table(element, **kw).rstrip()
    options = {k.split("_", 1)[1].lower() for k in element.element.kwargs if "_" in k}
    if "engine" not in options:
        sql += " ENGINE=InnoDB"
    if not any("charset" in option for option in options):
        sql += " DEFAULT CHARSET=utf8mb4"
    if "collate" not in options:
        sql += f" COLLATE={table_collation(compiler.dialect)}"
    return sql + "\n\n"


@compiles(DateTime, "mysql")
@compiles(DateTime, "mariadb")
def _datetime(type_: DateTime, compiler: Any, **kw: Any) -> str:
    """``DATETIME(6)``: MySQL's plain DATETIME keeps whole seconds and rounds the rest."""
    return "DATETIME(6)"


@compiles(Float, "mysql")
@compiles(Float, "mariadb")
def _float(type_: Float[Any], compiler: Any, **kw: Any) -> str:
    """``DOUBLE``: MySQL's FLOAT is single precision, PostgreSQL's and Python's double."""
    if getattr(type_, "precision", None) is not None:
        return str(compiler.visit_float(type_, **kw))
    return "DOUBLE"
