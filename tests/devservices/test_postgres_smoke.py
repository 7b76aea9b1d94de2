"""The PostgreSQL test server speaks the SQL the store relies on: Core tables and upserts."""

from __future__ import annotations

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.integration


def test_server_is_recent_and_upserts(pg_url: str) -> None:
    metadata = MetaData()
    customers = Table(
        "customers",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(100), nullable=False),
        Column("version", Integer, nullable=False),
    )
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        # WITH (FORCE) on DROP DATABASE and the upsert forms we use need PostgreSQL 13+.
        with engine.connect() as conn:
            major = conn.execute(select(func.current_setting("server_version_num"))).scalar_one()
        assert int(major) >= 130000

        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(
                customers.insert(),
                [
                    {"id": 1, "name": "Ada", "version": 1},
                    {"id": 2, "name": "Brian", "version": 1},
                ],
            )

        stmt = insert(customers).values(
            [
                {"id": 1, "name": "Ada Lovelace", "version": 2},  # newer: replaces
                {"id": 2, "name": "Stale Brian", "version": 0},  # older: guard keeps row
                {"id": 3, "name": "Grace", "version": 1},  # new key: inserted
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[customers.c.id],
            set_={"name": stmt.excluded.name, "version": stmt.excluded.version},
            where=customers.c.version < stmt.excluded.version,
        )
        with engine.begin() as conn:
            result = conn.execute(stmt)
            assert result.rowcount == 2  # the guarded row is neither inserted nor updated

        with engine.connect() as conn:
            rows = conn.execute(select(customers).order_by(customers.c.id)).all()
        assert [tuple(r) for r in rows] == [
            (1, "Ada Lovelace", 2),
            (2, "Brian", 1),
            (3, "Grace", 1),
        ]
    finally:
        engine.dispose()
