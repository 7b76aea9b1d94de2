"""The bookkeeping tables every entity shares, and the columns a reader sees."""

from __future__ import annotations

import functools

from sqlalchemy import (
    CHAR,
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
)

from models.columns import ColumnKind
from models.registry import column_rule

#: Bookkeeping tables shared by every entity (separate metadata: never in a user's models).
bookkeeping = MetaData()

offsets_table = Table(
    "mirror_offsets",
    bookkeeping,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
)

outcomes_table = Table(
    "mirror_outcomes",
    bookkeeping,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("outcome", String(32), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

changelogs_table = Table(
    "mirror_changelogs",
    bookkeeping,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    # Kafka's id of the changelog topic the rows were last written to whole (KIP-516).
    Column("topic_id", String(36), nullable=False),
)


logs_table = Table(
    "mirror_logs",
    bookkeeping,
    Column("topic", String(255), primary_key=True),
    # Kafka's id of the log the stored offsets and versions belong to (None: not known).
    Column("topic_id", String(36), nullable=True),
    # Versions of records read from this log take at least this timestamp (ms): set when the
    # topic was found recreated, above every version of the old log's rows.
    Column("version_floor", BigInteger, nullable=True),
)


@functools.lru_cache(maxsize=256)
def public_columns(table: Table) -> tuple[str, ...]:
    """Return the columns a reader sees (the bookkeeping ``mirror_*`` ones left out)."""
    return tuple(c.key for c in table.columns if not c.key.startswith("mirror_"))


@functools.lru_cache(maxsize=256)
def reads_back_as_written(table: Table) -> bool:
    """Tell whether every public column's value reads back exactly as written: text (not
    fixed-length ``CHAR``, which pads), integers or booleans, whose values the checks make exact
    before SQL. A full upsert's row is then known without the database returning it
    (``StoreTransaction.write``)."""
    exact = (ColumnKind.TEXT, ColumnKind.INTEGER, ColumnKind.BOOLEAN)
    return all(
        column_rule(table.c[name]).kind in exact and not isinstance(table.c[name].type, CHAR)
        for name in public_columns(table)
    )
