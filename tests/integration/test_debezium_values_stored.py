"""Debezium's encodings of the column types a unit test cannot store, through the applier into
every database: intervals (``MicroDuration``, ISO text), decimals wider than Python's default
28 digits, UUIDs."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Interval, MetaData, Numeric, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.base import MirroredEntity
from models.registry import EntitySpec, default_registry
from streams.apply.sql_applier import SqlApplier
from streams.core.decisions import Outcome, Rejection, RejectReason
from streams.core.records import SourceRecord
from tests.debezium_events import envelope, envelope_schema, with_schema


class LocalBase(DeclarativeBase):
    metadata = MetaData()


class Contract(MirroredEntity, LocalBase):
    """``public.contract``: an id, a notice period, an amount of numeric(38, 10), a party."""

    __tablename__ = "test_dbz_contract"
    __topic__ = "dbserver1.public.contract"
    __input_format__ = "debezium"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    notice: Mapped[timedelta | None] = mapped_column(Interval, nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(38, 10), nullable=True)
    party: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)


default_registry.unregister(Contract)


def fields(interval: str) -> list[dict[str, Any]]:
    """The row schema, the interval as ``interval.handling.mode`` writes it."""
    return [
        {"type": "string", "optional": False, "field": "id"},
        {
            "type": "int64" if interval == "numeric" else "string",
            "optional": True,
            "name": "io.debezium.time."
            + ("MicroDuration" if interval == "numeric" else "Interval"),
            "version": 1,
            "field": "notice",
        },
        {
            "type": "bytes",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": "10", "connect.decimal.precision": "38"},
            "field": "amount",
        },
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Uuid",
            "version": 1,
            "field": "party",
        },
    ]


AMOUNT = Decimal("-1234567890123456789012345678.9012345678")
PARTY = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
NOTICE = timedelta(days=30, hours=2, minutes=3, seconds=4, microseconds=500_000)


def record(offset: int, row: dict[str, Any], interval: str = "numeric") -> SourceRecord:
    value = with_schema(envelope("c", after=row), envelope_schema(fields(interval)))
    return SourceRecord(Contract.__topic__, 0, offset, 1_700_000_000_000 + offset, None, value)


@pytest.fixture
def mirror(
    applier_of: Callable[[type[Any]], tuple[SqlApplier, EntitySpec]],
) -> tuple[SqlApplier, EntitySpec]:
    return applier_of(Contract)


def test_intervals_wide_decimals_and_uuids_are_stored_as_their_columns_hold_them(
    mirror: tuple[SqlApplier, EntitySpec], db_url: str
) -> None:
    applier, spec = mirror
    unscaled = int(str(AMOUNT).replace(".", ""))  # ten decimals: the scale
    amount = base64.b64encode(unscaled.to_bytes(17, "big", signed=True)).decode()
    micros = NOTICE // timedelta(microseconds=1)
    result = applier.apply(
        spec,
        [
            record(1, {"id": "numeric", "notice": micros, "amount": amount, "party": str(PARTY)}),
            record(2, {"id": "iso", "notice": "P0Y0M30DT2H3M4.5S", "party": None}, "string"),
            record(3, {"id": "months", "notice": "P0Y1M0DT0H0M0S"}, "string"),
        ],
    )
    assert result.outcomes[:2] == [Outcome.APPLIED, Outcome.APPLIED]
    months = result.decisions[2]
    assert isinstance(months, Rejection) and months.reason is RejectReason.INVALID_ROW
    assert "interval.handling.mode=numeric" in months.detail
    rows = applier.store.rows(spec)
    assert rows["numeric"]["notice"] == NOTICE and rows["iso"]["notice"] == NOTICE
    assert rows["numeric"]["party"] == PARTY
    if not db_url.startswith("sqlite"):  # SQLite keeps a numeric as a binary float
        assert rows["numeric"]["amount"] == AMOUNT


def test_a_large_batch_of_intervals_takes_the_bulk_paths(
    mirror: tuple[SqlApplier, EntitySpec],
) -> None:
    # 300 rows: COPY on PostgreSQL (an interval as Python's text of a timedelta).
    applier, spec = mirror
    notices = {f"c{n}": timedelta(days=n - 150, microseconds=n) for n in range(300)}
    applier.apply(
        spec,
        [
            record(n, {"id": key, "notice": notice // timedelta(microseconds=1)})
            for n, (key, notice) in enumerate(notices.items())
        ],
    )
    assert {k: r["notice"] for k, r in applier.store.rows(spec).items()} == notices
