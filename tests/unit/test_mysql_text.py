"""The literals of MySQL's multi-row upsert (models/store/mysql_text.py): the same text as
PyMySQL's own escaping, whichever fast path a column takes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from pymysql.converters import escape_item

from models.columns import ColumnKind
from models.store.mysql_text import literals, values_text


@given(st.lists(st.text(), min_size=1, max_size=20))
def test_text_is_escaped_as_pymysql_escapes_it(texts: list[str]) -> None:
    assert literals(ColumnKind.TEXT, texts) == ",".join(escape_item(t, "utf8mb4") for t in texts)


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1))
def test_integers_are_written_as_they_are(numbers: list[int]) -> None:
    assert literals(ColumnKind.INTEGER, numbers) == ",".join(map(str, numbers))


def test_each_kind_and_null_in_a_multi_row_list() -> None:
    rows = [
        ("a'b", 1, True, 1.5, datetime(2026, 12, 6, 12, 0, 0, 123456), date(2026, 12, 6), [1]),
        (None, None, False, None, None, None, None),
    ]
    kinds = [
        ColumnKind.TEXT,
        ColumnKind.INTEGER,
        ColumnKind.BOOLEAN,
        ColumnKind.FLOAT,
        ColumnKind.DATETIME,
        ColumnKind.DATE,
        ColumnKind.JSON,
    ]
    assert values_text(rows, kinds) == (
        "('a\\'b',1,1,1.5,'2026-12-06 12:00:00.123456','2026-12-06','[1]'),"
        "(NULL,NULL,0,NULL,NULL,NULL,NULL)"
    )


def test_an_aware_datetime_is_written_in_utc_without_an_offset() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 12, 6, 13, 0, tzinfo=paris)
    assert literals(ColumnKind.DATETIME, [moment]) == "'2026-12-06 12:00:00'"
    assert literals(ColumnKind.DATETIME, [moment.astimezone(UTC)]) == "'2026-12-06 12:00:00'"


def test_nul_and_a_non_finite_float_and_other_kinds() -> None:
    assert literals(ColumnKind.TEXT, ["a\x00b"]) == "'a\\0b'"
    # MySQL has no NaN: sent as text, strict mode refuses the row.
    assert literals(ColumnKind.FLOAT, [float("nan")]) == "'nan'"
    assert literals(ColumnKind.OTHER, [Decimal("1.25"), b"\x00\x01"]) == "1.25,_binary X'0001'"


def test_an_interval_is_the_datetime_past_the_epoch_sqlalchemy_keeps_it_as() -> None:
    # SQLAlchemy's Interval on MySQL/MariaDB is a DATETIME: 1970-01-01 plus the duration.
    notice = timedelta(days=30, hours=2, microseconds=5)
    assert literals(ColumnKind.INTERVAL, [notice, None]) == "'1970-01-31 02:00:00.000005',NULL"
