"""The store's dialects: one per database, chosen by name; what each calls a refusal."""

from __future__ import annotations

import sqlite3

import pymysql
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from models.store.dialect import first_line, is_row_fault
from models.store.engine import DIALECTS, create_store_engine, dialect_named
from models.store.mysql import MysqlDialect
from models.store.postgres import PostgresDialect
from models.store.sqlite import SqliteDialect
from streams.core.errors import StoreError


def test_each_database_is_chosen_by_the_name_sqlalchemy_gives_it() -> None:
    assert sorted(DIALECTS) == ["mariadb", "mysql", "postgresql", "sqlite"]
    assert isinstance(dialect_named("postgresql"), PostgresDialect)
    assert isinstance(dialect_named("mariadb"), MysqlDialect)
    engine = create_store_engine("sqlite://")
    try:
        assert dialect_named(engine.dialect.name) is DIALECTS["sqlite"]
    finally:
        engine.dispose()


def test_a_database_without_a_dialect_is_refused_naming_it() -> None:
    with pytest.raises(StoreError, match="unsupported database dialect 'mssql'"):
        create_store_engine("mssql://u@h/db")


def sqlite_error(message: str) -> OperationalError:
    return OperationalError("INSERT ...", None, sqlite3.OperationalError(message))


def test_sqlite_tells_a_table_that_does_not_fit_from_a_busy_database() -> None:
    sqlite_dialect = SqliteDialect()
    missing = sqlite_error("table servicea_planet has no column named name")
    busy = sqlite_error("database is locked")
    assert sqlite_dialect.refuses(missing) and is_row_fault(missing, sqlite_dialect)
    assert not sqlite_dialect.refuses(busy) and not is_row_fault(busy, sqlite_dialect)
    assert first_line(missing) == "table servicea_planet has no column named name"


def test_postgresql_refusals_are_never_operational_errors() -> None:
    postgres = PostgresDialect()
    assert not is_row_fault(sqlite_error("no such table: x"), postgres)
    refused = IntegrityError("INSERT ...", None, Exception("duplicate key\nDETAIL: ..."))
    assert is_row_fault(refused, postgres) and first_line(refused) == "duplicate key"
    assert is_row_fault(ValueError("NUL in text"), postgres)


def mysql_error(code: int, message: str) -> OperationalError:
    return OperationalError("INSERT ...", None, pymysql.err.OperationalError(code, message))


def test_mysql_tells_a_refused_row_from_a_deadlock_or_an_outage() -> None:
    maria = MysqlDialect("mariadb")
    refused = [
        mysql_error(1054, "Unknown column 'name' in 'field list'"),
        mysql_error(1366, "Incorrect integer value: 'x' for column `mass` at row 1"),
        mysql_error(4025, "CONSTRAINT `mass` failed for `asteroid`"),
    ]
    passing = [
        mysql_error(1213, "Deadlock found when trying to get lock; try restarting transaction"),
        mysql_error(1205, "Lock wait timeout exceeded; try restarting transaction"),
        mysql_error(2013, "Lost connection to server during query"),
        mysql_error(1021, "Disk full (/var/lib/mysql); waiting for someone to free space..."),
    ]
    assert all(maria.refuses(e) and is_row_fault(e, maria) for e in refused)
    assert not any(maria.refuses(e) or is_row_fault(e, maria) for e in passing)
    # Deadlocks and lock wait timeouts are counted apart (mirror_store_conflicts_total).
    assert [maria.conflicts(e) for e in passing] == [True, True, False, False]
