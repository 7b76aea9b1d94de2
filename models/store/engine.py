"""The store's database: its SQLAlchemy engine and its :class:`Dialect`, chosen here (and
only here) by the database's name."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from models.store.dialect import Dialect
from models.store.mysql import MysqlDialect
from models.store.postgres import PostgresDialect
from models.store.sqlite import SqliteDialect
from streams.core.errors import StoreError

_KNOWN: tuple[Dialect, ...] = (
    PostgresDialect(),
    SqliteDialect(),
    MysqlDialect("mysql"),
    MysqlDialect("mariadb"),
)
#: The databases the store runs on, by SQLAlchemy's name.
DIALECTS: dict[str, Dialect] = {d.name: d for d in _KNOWN}


def dialect_named(name: str) -> Dialect:
    """Return the dialect of the database SQLAlchemy calls ``name``."""
    dialect = DIALECTS.get(name)
    if dialect is None:
        raise StoreError(f"unsupported database dialect {name!r}")
    return dialect


def create_store_engine(url: str) -> Engine:
    """Create the engine for ``url`` with the settings the mirror relies on."""
    parsed = make_url(url)
    return dialect_named(parsed.get_backend_name()).create_engine(parsed)
