"""The two tables of tests/integration/test_debezium_pipeline.py, mirrored from Debezium.

Each model is its columns and three lines: the topic Debezium's PostgreSQL connector writes
(``<topic.prefix>.<schema>.<table>``; the test's ``TOPIC_PREFIX`` is the connector's
``topic.prefix`` and a dot), and the input format. With no ``__event_fields__`` every column
comes from the Debezium row field of the same name. The customers are versioned by their
change's position in PostgreSQL's WAL (``source.lsn``), the order lines as any topic is (the
record's timestamp, partition and offset), so the test runs both.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Integer,
    Interval,
    Numeric,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class CustomerColumns:
    """One key column and a column of every type the source table has (a mixin:
    tests/unit/test_debezium_fixtures.py declares the flattened rows' model with them too)."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    visits: Mapped[int | None] = mapped_column(Integer, nullable=True)
    points: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    active: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    balance: Mapped[Decimal | None] = mapped_column(Numeric(12, 2), nullable=True)
    seen_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    born_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    ref: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    notice: Mapped[timedelta | None] = mapped_column(Interval, nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(38, 10), nullable=True)
    """Wider than Python's default decimal context (28 digits)."""


class PipelineCustomer(CustomerColumns, MirroredEntity, Base):
    """The customers, versioned by the LSN."""

    __tablename__ = "pipeline_customer"
    __topic__ = "public.pipeline_customer"
    __input_format__ = "debezium"
    __version_from__ = "source.lsn"


class OrderLineColumns:
    """A composite key: the order and the line's number in it (a mixin, as above)."""

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(Text, nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2), nullable=True)


class PipelineOrderLine(OrderLineColumns, MirroredEntity, Base):
    """The order lines, versioned as any topic is."""

    __tablename__ = "pipeline_order_line"
    __topic__ = "public.pipeline_order_line"
    __input_format__ = "debezium"
