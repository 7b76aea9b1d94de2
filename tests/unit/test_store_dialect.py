"""The store's dialects: one per database, chosen by name; what each calls a refusal."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from models.store.dialect import first_line, is_row_fault
from models.store.engine import DIALECTS, create_store_engine, dialect_named
from models.store.postgres import PostgresDialect
from models.store.sqlite import SqliteDialect
from streams.core.errors import StoreError


def test_each_database_is_chosen_by_the_name_sqlalchemy_gives_it() -> None:
    assert sorted(DIALECTS) == ["postgresql", "sqlite"]
    assert isinstance(dialect_named("postgresql"), PostgresDialect)
    engine = create_store_engine("sqlite://")
    try:
        assert dialect_named(engine.dialect.name) is DIALECTS["sqlite"]
    finally:
        engine.dispose()


def test_a_database_without_a_dialect_is_refused_naming_it() -> None:
    with pytest.raises(StoreError, match="unsupported database dialect 'mysql'"):
        create_store_engine("mysql://u@h/db")


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
