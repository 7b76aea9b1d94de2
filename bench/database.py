"""Plain psycopg2 connections to a bench database, for reads and writes that must cost little
(the freshness markers' poll, the raw write limit): no SQLAlchemy in between."""

from __future__ import annotations

from typing import Any

import psycopg2
from sqlalchemy.engine import make_url


def connect(db_url: str, *, autocommit: bool = False) -> Any:
    """Return a psycopg2 connection to the database of SQLAlchemy URL ``db_url``."""
    url = make_url(db_url)
    conn = psycopg2.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
    )
    conn.autocommit = autocommit
    return conn
