"""Customers fed by Debezium (tests/unit/test_debezium*.py, tests/integration/test_debezium.py):
the whole declaration is the columns and two lines, no field map and no mapping code."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Date, DateTime, LargeBinary, Numeric, String, Text, Time
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class CustomerColumns:
    """The columns of ``public.customer`` at the source (SQLAlchemy copies a mixin's columns)."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    born: Mapped[date | None] = mapped_column(Date, nullable=True)
    seen: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2), nullable=True)
    photo: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    prefs: Mapped[Any] = mapped_column(JSON, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Text: a JSON document into it keeps its text."""
    opens: Mapped[time | None] = mapped_column(Time, nullable=True)


class DbzCustomer(CustomerColumns, MirroredEntity, Base):
    """Change events of ``public.customer``; versions from PostgreSQL's LSN."""

    __tablename__ = "dbz_customer"
    __topic__ = "dbserver1.public.customer"
    __input_format__ = "debezium"
    __version_from__ = "source.lsn"


class FlatCustomer(CustomerColumns, MirroredEntity, Base):
    """The same rows through ``ExtractNewRecordState`` (deletes rewritten, ``__deleted``)."""

    __tablename__ = "dbz_flat_customer"
    __topic__ = "flat.public.customer"
    __input_format__ = "debezium-flat"
